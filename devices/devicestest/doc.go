// Package devicestest holds test helpers for device packages: a counting
// interrupt line and a decoder that turns fuzz input into bus accesses.
//
// It is imported only from _test.go files; nothing in the monitor depends on it.
package devicestest
