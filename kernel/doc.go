// Package kernel owns boxd's guest kernel: the config fragment (guest.config) merged
// onto `make tinyconfig` of Debian's linux-source-6.1, the script that builds it into a
// content-addressed cache (build.sh, run by `make kernel`), and the helpers that find
// the cached vmlinux and bzImage for the fragment in this tree.
//
// Invariants:
//   - guest.config parses with ParseFragment: one CONFIG_X=value per line, no
//     duplicates, nothing built as a module (the guest has no module loader).
//   - The cache key covers everything that shapes the image (build script version,
//     linux-source package version, gcc version, fragment contents), so Path never
//     returns a kernel built from another fragment.
//   - Finding a kernel never builds one: tests and the e2e tier get ErrNotBuilt and
//     skip or fail with "run make kernel".
package kernel
