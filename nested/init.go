package nested

import _ "embed"

// l1Init is L1's /init. Its text is part of the initramfs cache key.
//
//go:embed l1init.sh
var l1Init []byte
