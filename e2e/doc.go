// Package e2e holds boxd's end-to-end tests (tier 3). They are compiled only with
// the build tag e2e and need a /dev/kvm that can run a Linux guest: on a host
// with VT-x/AMD-V they run directly, elsewhere `make e2e` runs them inside the
// nested harness (boxd nested), where /dev/kvm is SVM emulated by QEMU.
//
// They find what they drive through the environment: BOXD_BIN (the boxd binary;
// default ../bin/boxd) and the guest kernel in the kernel cache (make kernel).
package e2e
