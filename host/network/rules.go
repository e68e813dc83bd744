package network

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/boxd-dev/boxd/host/daemon"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// The ruleset, in nft syntax (BR is the bridge, GW the gateway, NET the
// subnet, and the vm rules repeat for every lease):
//
//	table inet boxd {
//	  chain prerouting {   # VM→host→VM, refused before routing
//	    type filter hook prerouting priority filter; policy accept;
//	    iifname BR ip daddr NET ip daddr != GW reject with icmpx admin-prohibited
//	  }
//	  chain input {        # the host's own services
//	    type filter hook input priority filter; policy accept;
//	    iifname BR ct state established,related accept
//	    iifname BR ip daddr GW udp dport 53 accept
//	    iifname BR ip daddr GW tcp dport 53 accept
//	    iifname BR ip daddr GW tcp dport GUEST_PORT accept   # each one
//	    iifname BR ip daddr GW icmp type echo-request accept
//	    iifname BR meta l4proto tcp reject with tcp reset
//	    iifname BR reject with icmpx admin-prohibited
//	  }
//	  chain forward {
//	    type filter hook forward priority filter; policy accept;
//	    iifname BR oifname BR reject with icmpx admin-prohibited  # VM→host→VM
//	    oifname BR ct state established,related accept
//	    oifname BR drop                                           # no inbound
//	  }
//	  chain postrouting {
//	    type nat hook postrouting priority srcnat; policy accept;
//	    ip saddr NET oifname != BR masquerade
//	  }
//	}
//	table bridge boxd {
//	  chain forward {      # port to port: VM to VM, never
//	    type filter hook forward priority filter; policy accept;
//	    iifname "bx*" drop
//	  }
//	  chain prerouting {   # anti-spoofing, per VM, comment "vm:ID"
//	    type filter hook prerouting priority filter; policy accept;
//	    iifname TAP ether saddr != MAC drop
//	    iifname TAP ether type != ip ether type != arp drop
//	    iifname TAP ether type ip ip saddr != ADDR drop
//	    iifname TAP ether type arp arp saddr ip != ADDR drop
//	  }
//	}
//
// The bridge forward rule matches the TAPs by prefix rather than the bridge
// by name (meta ibrname) because the latter needs nft_meta_bridge, which
// some kernels lack; only the Manager's TAPs are named "bx...".
//
// Rejecting rather than dropping towards the host makes a guest's forbidden
// connection fail at once instead of after a timeout. VM-to-VM traffic sent
// to the gateway's MAC is refused in prerouting, before the routing
// decision: once routed, the host would first send an ICMP redirect, which
// spends the per-peer ICMP rate limit the rejection then needs. The forward
// rule stays as a second line.

// Chain names.
const (
	chainInput       = "input"
	chainForward     = "forward"
	chainPostrouting = "postrouting"
	chainPrerouting  = "prerouting"
)

func inetTable() *nftables.Table {
	return &nftables.Table{Name: Table, Family: nftables.TableFamilyINet}
}

func bridgeTable() *nftables.Table {
	return &nftables.Table{Name: Table, Family: nftables.TableFamilyBridge}
}

// ruleset is what the Manager installs: the fixed rules and the per-VM ones.
type ruleset struct {
	bridge     string
	gateway    netip.Addr
	subnet     netip.Prefix
	guestPorts []uint16
}

// install replaces both tables, with the rules of leases, in one
// transaction: a packet sees the old ruleset or the new one, never none.
func (rs ruleset) install(c *nftables.Conn, leases []daemon.Lease) error {
	for _, t := range []*nftables.Table{inetTable(), bridgeTable()} {
		// Adding before deleting makes the delete valid whether or not
		// the table existed; the whole batch is one transaction.
		c.AddTable(t)
		c.DelTable(t)
	}
	inet := c.AddTable(inetTable())
	accept := nftables.ChainPolicyAccept

	pre4 := c.AddChain(&nftables.Chain{Name: chainPrerouting, Table: inet, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	input := c.AddChain(&nftables.Chain{Name: chainInput, Table: inet, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	add := func(ch *nftables.Chain, exprs ...[]expr.Any) {
		c.AddRule(&nftables.Rule{Table: ch.Table, Chain: ch, Exprs: concat(exprs...)})
	}
	br := rs.bridge
	add(pre4, iifname(br), ip4DaddrIn(rs.subnet), ip4Daddr(rs.gateway, expr.CmpOpNeq), rejectAdmin())
	add(input, iifname(br), ctEstablished(), verdict(expr.VerdictAccept))
	add(input, iifname(br), ip4Daddr(rs.gateway, expr.CmpOpEq), l4proto(unix.IPPROTO_UDP), dport(53), verdict(expr.VerdictAccept))
	add(input, iifname(br), ip4Daddr(rs.gateway, expr.CmpOpEq), l4proto(unix.IPPROTO_TCP), dport(53), verdict(expr.VerdictAccept))
	for _, p := range rs.guestPorts {
		add(input, iifname(br), ip4Daddr(rs.gateway, expr.CmpOpEq), l4proto(unix.IPPROTO_TCP), dport(p), verdict(expr.VerdictAccept))
	}
	add(input, iifname(br), ip4Daddr(rs.gateway, expr.CmpOpEq), l4proto(unix.IPPROTO_ICMP), icmpType(8), verdict(expr.VerdictAccept))
	add(input, iifname(br), l4proto(unix.IPPROTO_TCP), []expr.Any{&expr.Reject{Type: unix.NFT_REJECT_TCP_RST}})
	add(input, iifname(br), rejectAdmin())

	fwd := c.AddChain(&nftables.Chain{Name: chainForward, Table: inet, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	add(fwd, iifname(br), oifname(br, expr.CmpOpEq), rejectAdmin())
	add(fwd, oifname(br, expr.CmpOpEq), ctEstablished(), verdict(expr.VerdictAccept))
	add(fwd, oifname(br, expr.CmpOpEq), verdict(expr.VerdictDrop))

	post := c.AddChain(&nftables.Chain{Name: chainPostrouting, Table: inet, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource, Policy: &accept})
	add(post, ip4SaddrIn(rs.subnet), oifname(br, expr.CmpOpNeq), []expr.Any{&expr.Masq{}})

	brt := c.AddTable(bridgeTable())
	bfwd := c.AddChain(&nftables.Chain{Name: chainForward, Table: brt, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	add(bfwd, metaEq(expr.MetaKeyIIFNAME, []byte(tapPrefix)), verdict(expr.VerdictDrop))
	pre := c.AddChain(&nftables.Chain{Name: chainPrerouting, Table: brt, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	for _, l := range leases {
		if err := addVMRules(c, pre, l); err != nil {
			return err
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("network: install nftables ruleset: %w", err)
	}
	return nil
}

func preroutingChain() *nftables.Chain {
	return &nftables.Chain{Name: chainPrerouting, Table: bridgeTable()}
}

// vmTag is the comment that marks a VM's rules, so Detach finds them by
// listing the chain rather than by handles it would have to remember.
func vmTag(vmID string) string { return "vm:" + vmID }

// addVMRules queues the anti-spoofing rules of l: a guest sends only from
// its own MAC and address, and only IPv4 and ARP.
func addVMRules(c *nftables.Conn, pre *nftables.Chain, l daemon.Lease) error {
	hw, err := net.ParseMAC(l.MAC)
	if err != nil || len(hw) != 6 {
		return fmt.Errorf("network: lease of %s: bad MAC %q", l.VMID, l.MAC)
	}
	if !l.Address.Addr().Is4() {
		return fmt.Errorf("network: lease of %s: address %s is not IPv4", l.VMID, l.Address)
	}
	ud := userdata.AppendString(nil, userdata.TypeComment, vmTag(l.VMID))
	add := func(exprs ...[]expr.Any) {
		c.AddRule(&nftables.Rule{Table: pre.Table, Chain: pre, UserData: ud, Exprs: concat(exprs...)})
	}
	tap := iifname(l.TAP)
	drop := verdict(expr.VerdictDrop)
	addr := l.Address.Addr().AsSlice()
	add(tap, payloadCmp(expr.PayloadBaseLLHeader, 6, hw, expr.CmpOpNeq), drop)
	add(tap, etherType(unix.ETH_P_IP, expr.CmpOpNeq), etherType(unix.ETH_P_ARP, expr.CmpOpNeq), drop)
	add(tap, etherType(unix.ETH_P_IP, expr.CmpOpEq), payloadCmp(expr.PayloadBaseNetworkHeader, 12, addr, expr.CmpOpNeq), drop)
	// The ARP sender protocol address follows htype, ptype, hlen, plen,
	// oper and the 6-byte sender hardware address.
	add(tap, etherType(unix.ETH_P_ARP, expr.CmpOpEq), payloadCmp(expr.PayloadBaseNetworkHeader, 14, addr, expr.CmpOpNeq), drop)
	return nil
}

// deleteVMRules queues the deletion of every rule tagged for vmID. A missing
// table or chain means there is nothing to delete.
func deleteVMRules(c *nftables.Conn, vmID string) error {
	rules, err := c.GetRules(bridgeTable(), preroutingChain())
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("network: list rules: %w", err)
	}
	for _, r := range rules {
		if tag, ok := userdata.GetString(r.UserData, userdata.TypeComment); ok && tag == vmTag(vmID) {
			if err := c.DelRule(r); err != nil {
				return fmt.Errorf("network: delete rule of %s: %w", vmID, err)
			}
		}
	}
	return nil
}

// Expression builders. Register 1 is the only scratch register used.

func concat(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func verdict(k expr.VerdictKind) []expr.Any { return []expr.Any{&expr.Verdict{Kind: k}} }

func rejectAdmin() []expr.Any {
	return []expr.Any{&expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_ADMIN_PROHIBITED}}
}

// ifnameBytes is an interface name as the kernel compares it: IFNAMSIZ
// bytes, NUL padded.
func ifnameBytes(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

func metaEq(k expr.MetaKey, data []byte) []expr.Any {
	return metaCmp(k, data, expr.CmpOpEq)
}

func metaCmp(k expr.MetaKey, data []byte, op expr.CmpOp) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: k, Register: 1},
		&expr.Cmp{Op: op, Register: 1, Data: data},
	}
}

func iifname(name string) []expr.Any { return metaEq(expr.MetaKeyIIFNAME, ifnameBytes(name)) }

func oifname(name string, op expr.CmpOp) []expr.Any {
	return metaCmp(expr.MetaKeyOIFNAME, ifnameBytes(name), op)
}

func l4proto(p byte) []expr.Any { return metaEq(expr.MetaKeyL4PROTO, []byte{p}) }

func nfproto4() []expr.Any { return metaEq(expr.MetaKeyNFPROTO, []byte{unix.NFPROTO_IPV4}) }

func payloadCmp(base expr.PayloadBase, off uint32, data []byte, op expr.CmpOp) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: base, Offset: off, Len: uint32(len(data))},
		&expr.Cmp{Op: op, Register: 1, Data: data},
	}
}

func ip4Daddr(a netip.Addr, op expr.CmpOp) []expr.Any {
	return concat(nfproto4(), payloadCmp(expr.PayloadBaseNetworkHeader, 16, a.AsSlice(), op))
}

func ip4SaddrIn(p netip.Prefix) []expr.Any { return ip4In(12, p) }

func ip4DaddrIn(p netip.Prefix) []expr.Any { return ip4In(16, p) }

// ip4In matches an IPv4 header's address at off (12 source, 16
// destination) against prefix p.
func ip4In(off uint32, p netip.Prefix) []expr.Any {
	mask := net.CIDRMask(p.Bits(), 32)
	return concat(nfproto4(), []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Addr().AsSlice()},
	})
}

func dport(p uint16) []expr.Any {
	return payloadCmp(expr.PayloadBaseTransportHeader, 2, binary.BigEndian.AppendUint16(nil, p), expr.CmpOpEq)
}

func icmpType(t byte) []expr.Any {
	return payloadCmp(expr.PayloadBaseTransportHeader, 0, []byte{t}, expr.CmpOpEq)
}

func etherType(t uint16, op expr.CmpOp) []expr.Any {
	return payloadCmp(expr.PayloadBaseLLHeader, 12, binary.BigEndian.AppendUint16(nil, t), op)
}

func ctEstablished() []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binary.NativeEndian.AppendUint32(nil, expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED),
			Xor:  make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}
}

// deleteTables queues the deletion of both tables, present or not.
func deleteTables(c *nftables.Conn) {
	for _, t := range []*nftables.Table{inetTable(), bridgeTable()} {
		c.AddTable(t)
		c.DelTable(t)
	}
}

// VMRules counts the nftables rules installed for vmID in the calling thread's
// network namespace: non-zero while the VM holds a lease, zero after Detach.
// It is how tests (and a curious operator) check that destroy left nothing.
func VMRules(vmID string) (int, error) {
	c, err := nftables.New()
	if err != nil {
		return 0, fmt.Errorf("network: %w", err)
	}
	rules, err := c.GetRules(bridgeTable(), preroutingChain())
	if errors.Is(err, unix.ENOENT) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("network: list rules: %w", err)
	}
	n := 0
	for _, r := range rules {
		if tag, ok := userdata.GetString(r.UserData, userdata.TypeComment); ok && tag == vmTag(vmID) {
			n++
		}
	}
	return n, nil
}
