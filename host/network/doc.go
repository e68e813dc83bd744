// Package network gives each VM its link to the outside on one host: a TAP
// device on a host bridge, an IPv4 address from a configurable subnet,
// egress through NAT, DNS, and isolation. Manager implements
// daemon.Network.
//
// What it builds:
//   - A bridge (default "boxd0") with a fixed MAC and the subnet's first
//     host address (default 10.88.0.1/16): the guests' gateway. Created or
//     adopted with netlink.
//   - Per VM, a persistent TAP "bx"+ID (IFF_TAP|IFF_NO_PI|IFF_VNET_HDR,
//     single queue: the flags virtio/net.OpenTAP attaches with) owned by
//     the daemon's user, an isolated port of the bridge, up. It outlives
//     the monitor, so a guest reboot or a daemon restart keeps it.
//   - Addresses allocated round-robin from the subnet and MACs derived from
//     them ("02:62:78" + the address's low three bytes). The daemon's store
//     is authoritative for leases (Start receives them); the Manager keeps
//     its own record (network.json in its state directory) of what it
//     created and of the allocation cursor, so a restart reuses a freed
//     address as late as possible and deletes what the daemon lost.
//   - nftables tables "boxd" (inet and bridge), programmed through netlink
//     with github.com/google/nftables (no nft binary), installed in one
//     transaction: masquerade of the subnet out of any other interface,
//     net.ipv4.ip_forward=1, and the isolation rules listed in rules.go.
//   - A DNS forwarder on gateway:53, UDP and TCP.
//
// Isolation, each with a second line behind it:
//   - VM to VM: bridge port isolation (BR_ISOLATED on each TAP) and a
//     bridge-family rule dropping port-to-port frames; through the host's
//     router, a prerouting reject and a forward reject.
//   - VM to host: the input chain accepts, from the bridge, only DNS and
//     Config.GuestTCPPorts on the gateway address, ping, and replies to the
//     host's own connections; everything else is rejected (TCP reset or
//     ICMP admin-prohibited), on every host address.
//   - Spoofing: per-VM bridge rules drop frames from a TAP whose source MAC
//     or IPv4/ARP sender address is not its lease's, and anything but IPv4
//     and ARP.
//   - Inbound: nothing outside may open a connection to a VM; the host may.
//
// DNS: the lease names the gateway as the guest's only resolver, and the
// forwarder relays queries verbatim to the resolvers in the host's
// /etc/resolv.conf. Handing the guest the host's resolvers instead fails
// on the commonest hosts, whose resolv.conf names a loopback stub
// (systemd-resolved's 127.0.0.53) a guest cannot reach, and would need a
// firewall hole per resolver and a guest reconfiguration whenever the
// host's network changes. The forwarder parses only the DNS header's ID and
// QR bit, so it needs no DNS library; per-query upstream sockets (random
// source ports, connected) keep it from accepting forged answers.
//
// Namespaces: Config.NetNSFd makes the Manager build everything inside
// another network namespace: netlink and nftables requests carry it in
// their sockets, and TAP creation, sockets and sysctls run on a thread
// switched into it (namespace.do). Tests build their whole topology in
// namespaces they create; nothing they send can leave them.
//
// Invariants: every TAP named "bx..." on the bridge belongs to a lease the
// daemon holds (Start deletes the rest); each lease's rules carry the
// comment "vm:ID" and are deleted with it; Detach and Teardown succeed on
// what is already gone. Close leaves the host's network as it is, so VMs
// keep running across a daemon restart; Teardown removes all of it except
// ip_forward, which other software may rely on.
//
// Known limits: a host firewall whose forward policy is drop (Docker sets
// iptables' FORWARD to DROP) also drops the guests' egress, since an accept
// in one nftables table cannot override a drop in another; a resolver
// already bound to 0.0.0.0:53 keeps the forwarder from starting. IPv6 is
// not offered to guests.
package network
