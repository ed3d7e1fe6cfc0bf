package main

// Wiring of the HTTP API (processor.API) into `cartlift run`: tokens from
// the environment, the advertised address, the transactional producer and
// the metrics hook.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/cartlift/cartlift/processor"
)

// minTokenLen is the shortest bearer token accepted: shorter ones are
// guessable.
const minTokenLen = 16

// apiTokens is CARTLIFT_API_TOKENS: "token1:read,token2:write". It decodes
// itself (instead of envconfig's map decoding) so that no error message
// ever contains a token: errors name the entry by its position.
type apiTokens map[string]processor.Scope

// EnvDecode implements envconfig.DecoderCtx.
func (t *apiTokens) EnvDecode(_ context.Context, val string) error {
	m := apiTokens{}
	if strings.TrimSpace(val) == "" {
		*t = m
		return nil
	}
	for i, entry := range strings.Split(val, ",") {
		tok, scope, ok := strings.Cut(strings.TrimSpace(entry), ":")
		if !ok {
			return fmt.Errorf("entry %d is not token:scope", i+1)
		}
		tok = strings.TrimSpace(tok)
		s, err := processor.ParseScope(strings.TrimSpace(scope))
		if err != nil {
			return fmt.Errorf("entry %d: %v", i+1, err)
		}
		if len(tok) < minTokenLen {
			return fmt.Errorf("entry %d: the token is shorter than %d characters", i+1, minTokenLen)
		}
		if strings.ContainsFunc(tok, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
			return fmt.Errorf("entry %d: the token contains spaces or control characters", i+1)
		}
		if _, dup := m[tok]; dup {
			return fmt.Errorf("entry %d: the token is listed twice", i+1)
		}
		m[tok] = s
	}
	*t = m
	return nil
}

// advertiseAddr is the address other instances reach this one's API at:
// CARTLIFT_HTTP_ADVERTISE when set, else the listener's address with an
// unspecified host (0.0.0.0, ::) replaced by 127.0.0.1, which suits
// several instances on one machine. Across machines, set
// CARTLIFT_HTTP_ADVERTISE (in Kubernetes: the pod's IP or DNS name).
func advertiseAddr(configured string, ln net.Addr) string {
	if configured != "" {
		return configured
	}
	host, port, err := net.SplitHostPort(ln.String())
	if err != nil {
		return ln.String()
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// apiTransactionalID is the API producer's transactional id: one per
// instance (derived from the static member id), stable across restarts.
func apiTransactionalID(cfg *runConfig) string { return "cartlift-api-" + cfg.instanceID() }

// newAPIHandler builds the API with the ops endpoints (/healthz, /readyz,
// /metrics; unauthenticated) on the same mux.
func (n *node) newAPIHandler(cfg *runConfig, advertise string, producer processor.TxnProducer, m *metrics) (http.Handler, error) {
	api, err := processor.NewAPI(processor.APIConfig{
		Backend:     n.proc,
		Producer:    producer,
		EventsTopic: cfg.TopicEvents,
		Tokens:      cfg.APITokens,
		MaxBody:     cfg.HTTPMaxBody,
		MaxEvents:   cfg.APIMaxEvents,
		SelfAddr:    advertise,
		Logger:      n.log,
		Observe:     m.observeHTTP,
	})
	if err != nil {
		return nil, err
	}
	if api.Open() {
		n.log.Warn("CARTLIFT_API_TOKENS is empty: the HTTP API answers every request without authentication (development mode)")
	}
	api.Handle("GET /healthz", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	}))
	api.Handle("GET /readyz", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		s := n.proc.Stats()
		status, code := "ready", http.StatusOK
		if !n.proc.Ready() {
			status, code = "catching up", http.StatusServiceUnavailable
		}
		writeJSON(w, code, map[string]any{"status": status, "partitions": s.Partitions, "caught_up": s.CaughtUp, "lag": s.Lag, "restoring": s.Restoring, "standby_partitions": s.StandbyPartitions, "standby_warm": s.StandbyWarm})
	}))
	api.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	// The Emporix adapter authenticates deliveries by their Svix signature.
	if n.emporix != nil {
		api.Handle(emporixRoute, n.emporix)
	} else {
		api.Handle(emporixRoute, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			refuseJSON(w, http.StatusNotFound, "the Emporix adapter is off: set CARTLIFT_EMPORIX_WEBHOOK_SECRET")
		}))
	}
	return api, nil
}

// codeClass is the status code's class label: "2xx", "4xx", ...
func codeClass(code int) string {
	if code < 100 || code > 599 {
		return "other"
	}
	return strconv.Itoa(code/100) + "xx"
}

// errHTTPOff is returned by listenHTTP when CARTLIFT_HTTP_ADDR is off.
var errHTTPOff = errors.New("http off")

// listenHTTP opens the API's listener, before the processor starts, so
// that the advertised address (the port, with CARTLIFT_HTTP_ADDR=...:0) is
// known when the processor joins the group.
func listenHTTP(cfg *runConfig, log *slog.Logger) (net.Listener, string, error) {
	if cfg.HTTPAddr == "off" {
		return nil, "", errHTTPOff
	}
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return nil, "", fmt.Errorf("CARTLIFT_HTTP_ADDR %s: %w", cfg.HTTPAddr, err)
	}
	adv := advertiseAddr(cfg.HTTPAdvertise, ln.Addr())
	log.Info("http listening", "addr", ln.Addr().String(), "advertised", adv)
	return ln, adv, nil
}
