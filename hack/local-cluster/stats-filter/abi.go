// abi.go: hand-written proxy-wasm ABI 0.2.1 bindings for the meshops stats filter.
//
// The host side (Envoy's proxy-wasm host) is reached through the imports of module "env";
// the module side is the set of //go:wasmexport functions below, which dispatch to the
// stats logic in stats.go. Nothing here knows about Istio: it only moves bytes across the
// boundary.
//
// Memory: the host asks for buffers with proxy_on_memory_allocate when it returns a value
// (a property, a header, a buffer). Such a buffer is kept in hostBuffers until the call
// that asked for it takes it back (takeHostBuffer); Go's GC does not move heap objects,
// so a pointer handed to the host stays valid while the slice is referenced.
package main

import "unsafe"

// Status codes of the ABI (WasmResult).
const (
	statusOK       = 0
	statusNotFound = 1
)

// Log levels of proxy_log.
const (
	logTrace = iota
	logDebug
	logInfo
	logWarn
	logError
	logCritical
)

// Header map types of proxy_{get,add,remove}_header_map_value.
const (
	mapRequestHeaders  = 0
	mapResponseHeaders = 2
)

// Buffer types of proxy_get_buffer_bytes.
const (
	bufferVMConfiguration     = 6
	bufferPluginConfiguration = 7
)

// Metric types of proxy_define_metric.
const (
	metricCounter   = 0
	metricGauge     = 1
	metricHistogram = 2
)

// Filter header status returned by proxy_on_{request,response}_headers.
const actionContinue = 0

//go:wasmimport env proxy_log
func hostLog(level uint32, msg unsafe.Pointer, msgLen uint32) uint32

//go:wasmimport env proxy_get_property
func hostGetProperty(path unsafe.Pointer, pathLen uint32, retPtr unsafe.Pointer, retLen unsafe.Pointer) uint32

//go:wasmimport env proxy_get_header_map_value
func hostGetHeaderMapValue(mapType uint32, key unsafe.Pointer, keyLen uint32, retPtr unsafe.Pointer, retLen unsafe.Pointer) uint32

//go:wasmimport env proxy_add_header_map_value
func hostAddHeaderMapValue(mapType uint32, key unsafe.Pointer, keyLen uint32, value unsafe.Pointer, valueLen uint32) uint32

//go:wasmimport env proxy_remove_header_map_value
func hostRemoveHeaderMapValue(mapType uint32, key unsafe.Pointer, keyLen uint32) uint32

//go:wasmimport env proxy_get_buffer_bytes
func hostGetBufferBytes(bufferType uint32, start uint32, maxSize uint32, retPtr unsafe.Pointer, retLen unsafe.Pointer) uint32

//go:wasmimport env proxy_get_current_time_nanoseconds
func hostGetCurrentTimeNanoseconds(ret unsafe.Pointer) uint32

//go:wasmimport env proxy_define_metric
func hostDefineMetric(metricType uint32, name unsafe.Pointer, nameLen uint32, retID unsafe.Pointer) uint32

//go:wasmimport env proxy_increment_metric
func hostIncrementMetric(id uint32, offset int64) uint32

//go:wasmimport env proxy_record_metric
func hostRecordMetric(id uint32, value uint64) uint32

// Return slots the host writes into: package-level, so they live on the heap and never
// move, whatever happens to the calling goroutine's stack while the host runs.
var (
	retPtr  uint32
	retLen  uint32
	retU32  uint32
	retU64  uint64
	scratch []byte // keeps the last argument bytes alive across a host call
)

// hostBuffers holds what the host allocated through proxy_on_memory_allocate, by address.
var hostBuffers = map[uint32][]byte{}

//go:wasmexport proxy_on_memory_allocate
func proxyOnMemoryAllocate(size uint32) uint32 {
	n := size
	if n == 0 {
		n = 1
	}
	b := make([]byte, n)
	p := uint32(uintptr(unsafe.Pointer(&b[0])))
	hostBuffers[p] = b[:size]
	return p
}

// takeHostBuffer returns the bytes the host wrote at ptr (allocated by it through
// proxy_on_memory_allocate) and forgets the allocation.
func takeHostBuffer(ptr, size uint32) []byte {
	if ptr == 0 || size == 0 {
		if ptr != 0 {
			delete(hostBuffers, ptr)
		}
		return []byte{}
	}
	b, ok := hostBuffers[ptr]
	if !ok || int(size) > len(b) {
		// Not a buffer we handed out (the host always asks us first): nothing to read.
		logf(logError, "meshops stats: host returned a buffer it did not allocate")
		return []byte{}
	}
	delete(hostBuffers, ptr)
	return b[:size]
}

// argBytes turns s into heap bytes the host can read; the pointer is nil for "".
func argBytes(s string) (unsafe.Pointer, uint32) {
	if len(s) == 0 {
		return nil, 0
	}
	scratch = []byte(s)
	return unsafe.Pointer(&scratch[0]), uint32(len(scratch))
}

func logf(level uint32, msg string) {
	b := []byte(msg)
	if len(b) == 0 {
		return
	}
	hostLog(level, unsafe.Pointer(&b[0]), uint32(len(b)))
}

// getProperty reads a host property; path segments are joined with NUL as the ABI wants.
func getProperty(path ...string) ([]byte, bool) {
	n := 0
	for i, p := range path {
		if i > 0 {
			n++
		}
		n += len(p)
	}
	b := make([]byte, 0, n)
	for i, p := range path {
		if i > 0 {
			b = append(b, 0)
		}
		b = append(b, p...)
	}
	scratch = b
	retPtr, retLen = 0, 0
	if hostGetProperty(unsafe.Pointer(&b[0]), uint32(len(b)), unsafe.Pointer(&retPtr), unsafe.Pointer(&retLen)) != statusOK {
		return nil, false
	}
	return takeHostBuffer(retPtr, retLen), true
}

func getHeader(mapType uint32, key string) (string, bool) {
	k, kl := argBytes(key)
	retPtr, retLen = 0, 0
	if hostGetHeaderMapValue(mapType, k, kl, unsafe.Pointer(&retPtr), unsafe.Pointer(&retLen)) != statusOK {
		return "", false
	}
	return string(takeHostBuffer(retPtr, retLen)), true
}

func addHeader(mapType uint32, key, value string) bool {
	kb := []byte(key)
	vb := []byte(value)
	if len(kb) == 0 || len(vb) == 0 {
		return false
	}
	ok := hostAddHeaderMapValue(mapType, unsafe.Pointer(&kb[0]), uint32(len(kb)), unsafe.Pointer(&vb[0]), uint32(len(vb))) == statusOK
	keepAlive(kb, vb)
	return ok
}

func removeHeader(mapType uint32, key string) {
	k, kl := argBytes(key)
	hostRemoveHeaderMapValue(mapType, k, kl)
}

func getBufferBytes(bufferType, size uint32) []byte {
	if size == 0 {
		return nil
	}
	retPtr, retLen = 0, 0
	if hostGetBufferBytes(bufferType, 0, size, unsafe.Pointer(&retPtr), unsafe.Pointer(&retLen)) != statusOK {
		return nil
	}
	return takeHostBuffer(retPtr, retLen)
}

func nowNanos() uint64 {
	retU64 = 0
	if hostGetCurrentTimeNanoseconds(unsafe.Pointer(&retU64)) != statusOK {
		return 0
	}
	return retU64
}

func defineMetric(metricType uint32, name string) (uint32, bool) {
	p, l := argBytes(name)
	retU32 = 0
	if hostDefineMetric(metricType, p, l, unsafe.Pointer(&retU32)) != statusOK {
		return 0, false
	}
	return retU32, true
}

func incrementMetric(id uint32, by int64) { hostIncrementMetric(id, by) }

func recordMetric(id uint32, value uint64) { hostRecordMetric(id, value) }

var keep [2][]byte

func keepAlive(a, b []byte) { keep[0], keep[1] = a, b }

// --- exports the host calls ---

//go:wasmexport proxy_abi_version_0_2_1
func proxyABIVersion021() {}

//go:wasmexport proxy_on_context_create
func proxyOnContextCreate(contextID, rootContextID uint32) {
	onContextCreate(contextID, rootContextID)
}

//go:wasmexport proxy_on_vm_start
func proxyOnVMStart(rootContextID, vmConfigurationSize uint32) uint32 {
	if onVMStart(rootContextID, getBufferBytes(bufferVMConfiguration, vmConfigurationSize)) {
		return 1
	}
	return 0
}

//go:wasmexport proxy_on_configure
func proxyOnConfigure(rootContextID, pluginConfigurationSize uint32) uint32 {
	if onConfigure(rootContextID, getBufferBytes(bufferPluginConfiguration, pluginConfigurationSize)) {
		return 1
	}
	return 0
}

//go:wasmexport proxy_on_request_headers
func proxyOnRequestHeaders(contextID, numHeaders, endOfStream uint32) uint32 {
	onRequestHeaders(contextID)
	return actionContinue
}

//go:wasmexport proxy_on_response_headers
func proxyOnResponseHeaders(contextID, numHeaders, endOfStream uint32) uint32 {
	onResponseHeaders(contextID)
	return actionContinue
}

//go:wasmexport proxy_on_log
func proxyOnLog(contextID uint32) { onLog(contextID) }

//go:wasmexport proxy_on_done
func proxyOnDone(contextID uint32) uint32 { return 1 }

//go:wasmexport proxy_on_delete
func proxyOnDelete(contextID uint32) { onDelete(contextID) }

func main() {}
