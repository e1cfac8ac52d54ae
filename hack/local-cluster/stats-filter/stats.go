// stats.go: the meshops stats filter's logic: Istio's standard HTTP metrics from an Envoy
// sidecar, the way Istio's wasm-era stats extension reported them.
//
// Every request is counted once per reporter side, in proxy_on_log, into
//
//	istio_requests_total                 (counter)
//	istio_request_duration_milliseconds  (histogram)
//	istio_request_bytes                  (histogram)
//	istio_response_bytes                 (histogram)
//
// A metric's labels travel in its name as segments "LABEL=.=VALUE;.;" followed by the metric
// name; the proxy's stats_tags (regex "(LABEL=\.=(.*?);\.;)", one per label) turn them into
// Prometheus labels. One metric id is defined per distinct name and cached.
//
// Reporter: "source" on the client (outbound) side, "destination" on the server (inbound)
// side; from the plugin (or VM) configuration {"reporter": "source"|"destination"} when
// given, else from the listener's direction.
package main

import (
	"strconv"
	"strings"
)

const (
	reporterSource      = "source"
	reporterDestination = "destination"
)

// Envoy's listener_direction values (envoy.config.core.v3.TrafficDirection).
const (
	directionInbound  = 1
	directionOutbound = 2
)

// labelNames is the order of the labels in every metric name.
var labelNames = []string{
	"reporter",
	"source_workload", "source_workload_namespace", "source_principal", "source_app", "source_version",
	"source_cluster", "source_canonical_service", "source_canonical_revision",
	"destination_workload", "destination_workload_namespace", "destination_principal", "destination_app",
	"destination_version", "destination_service", "destination_service_name", "destination_service_namespace",
	"destination_cluster", "destination_canonical_service", "destination_canonical_revision",
	"request_protocol", "response_code", "grpc_response_status", "response_flags", "connection_security_policy",
}

// responseFlagNames are Envoy's short response flag strings, by bit of response.flags
// (StreamInfo::CoreResponseFlag order).
var responseFlagNames = []string{
	"LH", "UH", "UT", "LR", "UR", "UF", "UC", "UO", "NR", "DI", "FI", "RL", "UAEX", "RLSE", "DC",
	"URX", "SI", "IH", "DPE", "UMSDR", "RFCF", "NFCF", "DT", "UPE", "NC", "OM", "DF", "DO", "DR", "UDO",
}

type rootState struct {
	reporter  string // from configuration; "" when not configured
	direction int64  // the listener's direction once read; -1 for unspecified
	self      *workload
	selfOK    bool
	debug     bool
}

type streamState struct {
	root      *rootState
	peer      *workload // the other side's metadata from x-meshops-peer, nil when absent
	authority string
	grpc      bool
}

var (
	vmConfig  map[string]string
	roots     = map[uint32]*rootState{}
	streams   = map[uint32]*streamState{}
	metricIDs = map[string]uint32{}
)

func onContextCreate(contextID, rootContextID uint32) {
	if rootContextID == 0 {
		roots[contextID] = &rootState{}
		return
	}
	r := roots[rootContextID]
	if r == nil {
		r = &rootState{}
		roots[rootContextID] = r
	}
	streams[contextID] = &streamState{root: r}
}

func onVMStart(rootContextID uint32, config []byte) bool {
	if len(strings.TrimSpace(string(config))) == 0 {
		return true
	}
	m, ok := parseFlatJSON(string(config))
	if !ok {
		logf(logError, "meshops stats: the VM configuration is not a JSON object")
		return false
	}
	vmConfig = m
	return true
}

func onConfigure(rootContextID uint32, config []byte) bool {
	r := roots[rootContextID]
	if r == nil {
		r = &rootState{}
		roots[rootContextID] = r
	}
	settings := map[string]string{}
	for k, v := range vmConfig {
		settings[k] = v
	}
	if len(strings.TrimSpace(string(config))) > 0 {
		m, ok := parseFlatJSON(string(config))
		if !ok {
			logf(logError, "meshops stats: the plugin configuration is not a JSON object")
			return false
		}
		for k, v := range m {
			settings[k] = v
		}
	}
	switch rep := settings["reporter"]; rep {
	case "", reporterSource, reporterDestination:
		r.reporter = rep
	default:
		logf(logError, "meshops stats: reporter must be \"source\" or \"destination\", not "+strconv.Quote(rep))
		return false
	}
	r.debug = settings["debug"] == "true"
	r.self, r.selfOK = selfWorkload()
	if !r.selfOK {
		logf(logWarn, "meshops stats: no node metadata (NAMESPACE, WORKLOAD_NAME) at configure time; will retry per request")
	}
	if r.debug {
		logf(logInfo, "meshops stats: configured reporter="+strconv.Quote(r.reporter)+" self="+encodePeer(r.self))
	}
	return true
}

// reporter is the configured reporter, else the one the listener's direction implies
// (outbound: source; inbound or unspecified: destination, as Istio's stats plugin did).
func (r *rootState) reporterFor() string {
	if r.reporter != "" {
		return r.reporter
	}
	if r.direction == 0 {
		// Only a stream context has the listener; Envoy 1.40 has it as xds.listener_direction
		// (older hosts as listener_direction).
		d, ok := propInt("xds", "listener_direction")
		if !ok {
			d, ok = propInt("listener_direction")
		}
		if !ok {
			return reporterDestination
		}
		r.direction = d
		if d == 0 {
			r.direction = -1 // unspecified: remember it, do not ask again
		}
	}
	if r.direction == directionOutbound {
		return reporterSource
	}
	return reporterDestination
}

func (r *rootState) selfNow() *workload {
	if !r.selfOK {
		r.self, r.selfOK = selfWorkload()
	}
	return r.self
}

func onRequestHeaders(contextID uint32) {
	s := streams[contextID]
	if s == nil {
		return
	}
	s.authority, _ = getHeader(mapRequestHeaders, ":authority")
	if ct, ok := getHeader(mapRequestHeaders, "content-type"); ok && strings.HasPrefix(strings.ToLower(ct), "application/grpc") {
		s.grpc = true
	}
	if s.root.reporterFor() == reporterSource {
		// Whatever the application sent under our header is not ours to forward.
		removeHeader(mapRequestHeaders, peerHeader)
		addHeader(mapRequestHeaders, peerHeader, encodePeer(s.root.selfNow()))
		return
	}
	if v, ok := getHeader(mapRequestHeaders, peerHeader); ok {
		if w, ok := decodePeer(v); ok {
			s.peer = w
		}
		removeHeader(mapRequestHeaders, peerHeader)
	}
}

func onResponseHeaders(contextID uint32) {
	s := streams[contextID]
	if s == nil {
		return
	}
	if s.root.reporterFor() == reporterDestination {
		removeHeader(mapResponseHeaders, peerHeader)
		addHeader(mapResponseHeaders, peerHeader, encodePeer(s.root.selfNow()))
		return
	}
	if v, ok := getHeader(mapResponseHeaders, peerHeader); ok {
		if w, ok := decodePeer(v); ok {
			s.peer = w
		}
		removeHeader(mapResponseHeaders, peerHeader)
	}
}

func onDelete(contextID uint32) {
	delete(streams, contextID)
	delete(roots, contextID)
}

func onLog(contextID uint32) {
	s := streams[contextID]
	if s == nil {
		return
	}
	r := s.root
	reporter := r.reporterFor()
	self := r.selfNow()
	peer := s.peer
	if peer == nil {
		peer = unknownWorkload()
	}

	var src, dst *workload
	var srcPrincipal, dstPrincipal, security, service string
	if reporter == reporterSource {
		src, dst = self, peer
		srcPrincipal = propStringOr(unknown, "upstream", "uri_san_local_certificate")
		dstPrincipal = propStringOr(unknown, "upstream", "uri_san_peer_certificate")
		security = unknown
		cluster, ok := getProperty("xds", "cluster_name")
		if !ok {
			cluster, _ = getProperty("cluster_name")
		}
		service = serviceFromCluster(string(cluster))
		if service == "" {
			service = serviceFromAuthority(s.authority)
		}
	} else {
		src, dst = peer, self
		srcPrincipal = propStringOr(unknown, "connection", "uri_san_peer_certificate")
		dstPrincipal = propStringOr(unknown, "connection", "uri_san_local_certificate")
		security = "none"
		if m, ok := propBool("connection", "mtls"); ok && m {
			security = "mutual_tls"
		}
		service = serviceFromAuthority(s.authority)
	}
	serviceName, serviceNamespace := unknown, unknown
	if service == "" {
		service = unknown
	} else {
		parts := strings.SplitN(service, ".", 3)
		serviceName = parts[0]
		if len(parts) > 1 && parts[1] != "" {
			serviceNamespace = parts[1]
		}
	}

	protocol := "http"
	grpcStatus := ""
	if s.grpc {
		protocol = "grpc"
		if g, ok := propInt("response", "grpc_status"); ok {
			grpcStatus = strconv.FormatInt(g, 10)
		}
	}
	code, _ := propInt("response", "code")
	flags, _ := propInt("response", "flags")

	values := []string{
		reporter,
		src.name, src.namespace, srcPrincipal, src.app, src.version,
		src.cluster, src.canonicalService, src.canonicalRevision,
		dst.name, dst.namespace, dstPrincipal, dst.app,
		dst.version, service, serviceName, serviceNamespace,
		dst.cluster, dst.canonicalService, dst.canonicalRevision,
		protocol, strconv.FormatInt(code, 10), grpcStatus, flagString(flags), security,
	}
	var b strings.Builder
	for i, l := range labelNames {
		b.WriteString(l)
		b.WriteString("=.=")
		b.WriteString(tagValue(values[i]))
		b.WriteString(";.;")
	}
	prefix := b.String()

	if id, ok := metric(metricCounter, prefix+"istio_requests_total"); ok {
		incrementMetric(id, 1)
	}
	if ms, ok := durationMillis(); ok {
		if id, ok := metric(metricHistogram, prefix+"istio_request_duration_milliseconds"); ok {
			recordMetric(id, ms)
		}
	}
	if n, ok := propInt("request", "total_size"); ok && n >= 0 {
		if id, ok := metric(metricHistogram, prefix+"istio_request_bytes"); ok {
			recordMetric(id, uint64(n))
		}
	}
	if n, ok := propInt("response", "total_size"); ok && n >= 0 {
		if id, ok := metric(metricHistogram, prefix+"istio_response_bytes"); ok {
			recordMetric(id, uint64(n))
		}
	}
	if r.debug {
		logf(logInfo, "meshops stats: "+prefix)
	}
}

// durationMillis is the request's duration: request.duration (ns) when the host has it,
// else now - request.time.
func durationMillis() (uint64, bool) {
	if d, ok := propInt("request", "duration"); ok && d >= 0 {
		return uint64(d) / 1e6, true
	}
	if start, ok := propInt("request", "time"); ok && start > 0 {
		if now := nowNanos(); now >= uint64(start) {
			return (now - uint64(start)) / 1e6, true
		}
	}
	return 0, false
}

func metric(metricType uint32, name string) (uint32, bool) {
	key := string(rune('0'+metricType)) + name
	if id, ok := metricIDs[key]; ok {
		return id, true
	}
	id, ok := defineMetric(metricType, name)
	if !ok {
		logf(logWarn, "meshops stats: could not define metric "+name)
		return 0, false
	}
	metricIDs[key] = id
	return id, true
}

// tagValue keeps a label value from ending its name segment early.
func tagValue(v string) string {
	if strings.Contains(v, ";") {
		v = strings.ReplaceAll(v, ";", "_")
	}
	return v
}

func flagString(flags int64) string {
	if flags == 0 {
		return "-"
	}
	var out []string
	for bit, name := range responseFlagNames {
		if flags&(1<<uint(bit)) != 0 {
			out = append(out, name)
		}
	}
	if len(out) == 0 {
		return "-"
	}
	return strings.Join(out, ",")
}

// serviceFromCluster is the service host of an Istio outbound cluster name
// (outbound|80||echo.ns.svc.cluster.local), "" for any other name.
func serviceFromCluster(cluster string) string {
	i := strings.LastIndexByte(cluster, '|')
	if i < 0 {
		return ""
	}
	return cluster[i+1:]
}

// serviceFromAuthority is the request's host (port stripped) when it is a Kubernetes
// service name (*.svc.cluster.local), else "".
func serviceFromAuthority(authority string) string {
	host := authority
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.Contains(host[i:], "]") {
		host = host[:i]
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if strings.HasSuffix(host, ".svc.cluster.local") && strings.Count(host, ".") >= 4 {
		return host
	}
	return ""
}

// --- property decoding: strings are raw bytes, ints 8-byte little-endian, bools 1 byte ---

func propString(path ...string) string {
	v, ok := getProperty(path...)
	if !ok {
		return ""
	}
	return string(v)
}

func propStringOr(def string, path ...string) string {
	if v := propString(path...); v != "" {
		return v
	}
	return def
}

func propInt(path ...string) (int64, bool) {
	v, ok := getProperty(path...)
	if !ok || len(v) != 8 {
		return 0, false
	}
	var n uint64
	for i := 7; i >= 0; i-- {
		n = n<<8 | uint64(v[i])
	}
	return int64(n), true
}

func propBool(path ...string) (bool, bool) {
	v, ok := getProperty(path...)
	if !ok || len(v) != 1 {
		return false, false
	}
	return v[0] != 0, true
}
