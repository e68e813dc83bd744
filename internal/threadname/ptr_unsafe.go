package threadname

import "unsafe"

// ptr returns the address of b's first byte for prctl, which reads or
// writes at most 16 bytes there; b is at least that long and stays alive
// (it is an argument of the enclosing call) until prctl returns.
func ptr(b []byte) unsafe.Pointer { return unsafe.Pointer(&b[0]) }
