package devices

// Ignore is a device that accepts every access and does nothing: reads return
// Fill in every byte, writes are dropped. The monitor maps it over ports Linux
// pokes during boot that need no behaviour, e.g. the POST-code port 0x80 that
// outb_p writes on every slow port access: mapping it keeps those exits off the
// "unhandled access" counters and logs.
//
// Fill 0xff is what an absent ISA device reads as; 0 suits ports whose readers
// test for set bits.
type Ignore struct {
	Fill byte
}

// Read fills data with i.Fill.
func (i Ignore) Read(_ uint64, data []byte) {
	for k := range data {
		data[k] = i.Fill
	}
}

// Write drops data.
func (Ignore) Write(uint64, []byte) {}
