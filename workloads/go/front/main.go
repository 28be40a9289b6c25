// Command front is a Go net/http front tier for the tracer's tests and
// harness: each request to /front/<id> makes one call to the backend, at
// <backend>/ok/<id>, through one shared http.Client. No header is forwarded:
// the link between the two requests is the tracer's own work (goroutines,
// docs/golang.md).
//
//	front -listen 127.0.0.1:8080 -backend http://127.0.0.1:8081 [-client shared|new]
//	      [-groundtruth FILE]
//
// -client shared: one keep-alive pool for every handler (a pooled connection
// is written by its own writeLoop goroutine); new: a new connection per call.
// It prints "ready" once listening. Ground truth (-groundtruth) is one JSON
// line per request handled and per call made, in workloads/groundtruth.py's
// format: the call's record carries the id of the request it was made for.
//
// The harness's chain load (harness/load.py, scenario go-chain) asks for
// GET /api/items/<n> and POST /api/orders, which call <backend>/items/<n> and
// POST <backend>/orders (workloads/flask_chain/backend.py). Those copy the
// x-request-id header, and only it: the harness scores spans by that id; the
// tracer never links by it (traceparent is not forwarded).
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

type record struct {
	Service   string `json:"service"`
	Kind      string `json:"kind"`
	Protocol  string `json:"protocol"`
	RequestID string `json:"request_id"`
	Method    string `json:"method"`
	Path      string `json:"path"`
	Status    int    `json:"status"`
	StartNs   int64  `json:"start_unix_ns"`
	EndNs     int64  `json:"end_unix_ns"`
	Peer      string `json:"peer,omitempty"`
	Pid       int    `json:"pid"`
}

type truth struct {
	mu      sync.Mutex
	f       *os.File
	service string
}

func (t *truth) write(r record) {
	if t.f == nil {
		return
	}
	r.Service, r.Protocol, r.Pid = t.service, "http1", os.Getpid()
	line, _ := json.Marshal(r)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.f.Write(append(line, '\n')) // one write per line: O_APPEND keeps lines whole
}

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "address to serve on")
	backend := flag.String("backend", "http://127.0.0.1:8081", "backend base URL")
	mode := flag.String("client", "shared", "shared: one keep-alive pool; new: a connection per call")
	gtPath := flag.String("groundtruth", "", "ground-truth JSON lines file")
	service := flag.String("service", "go-front", "service name in the ground truth")
	flag.Parse()

	gt := truth{service: *service}
	if *gtPath != "" {
		f, err := os.OpenFile(*gtPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			log.Fatal(err)
		}
		gt.f = f
	}
	transport := &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: time.Minute}
	switch *mode {
	case "shared":
	case "new":
		transport.DisableKeepAlives = true
	default:
		log.Fatalf("-client %q: want shared or new", *mode)
	}
	client := &http.Client{Transport: transport, Timeout: 10 * time.Second}

	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("/front/", func(w http.ResponseWriter, r *http.Request) {
		start := time.Now().UnixNano()
		id := strings.TrimPrefix(r.URL.Path, "/front/")
		path := "/ok/" + id
		callStart := time.Now().UnixNano()
		status := 0
		resp, err := client.Get(*backend + path)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			status = resp.StatusCode
		}
		gt.write(record{Kind: "client", RequestID: id, Method: "GET", Path: path, Status: status,
			StartNs: callStart, EndNs: time.Now().UnixNano(), Peer: *backend})
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			status = http.StatusBadGateway
		} else {
			w.WriteHeader(status)
			fmt.Fprintf(w, "front %s: backend %d\n", id, status)
		}
		gt.write(record{Kind: "server", RequestID: id, Method: r.Method, Path: r.URL.Path,
			Status: status, StartNs: start, EndNs: time.Now().UnixNano()})
	})
	// the harness's chain: the request id travels in x-request-id (scoring only)
	api := func(w http.ResponseWriter, r *http.Request, method, path string, body io.Reader) {
		start := time.Now().UnixNano()
		rid := r.Header.Get("x-request-id")
		req, err := http.NewRequest(method, *backend+path, body)
		status := 0
		var out []byte
		if err == nil {
			if rid != "" {
				req.Header.Set("x-request-id", rid)
			}
			if body != nil {
				req.Header.Set("content-type", "application/json")
			}
			var resp *http.Response
			callStart := time.Now().UnixNano()
			resp, err = client.Do(req)
			if err == nil {
				out, _ = io.ReadAll(resp.Body)
				resp.Body.Close()
				status = resp.StatusCode
			}
			gt.write(record{Kind: "client", RequestID: rid, Method: method, Path: path,
				Status: status, StartNs: callStart, EndNs: time.Now().UnixNano(), Peer: *backend})
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			status = http.StatusBadGateway
		} else {
			w.Header().Set("content-type", "application/json")
			w.WriteHeader(status)
			w.Write(out)
		}
		gt.write(record{Kind: "server", RequestID: rid, Method: r.Method, Path: r.URL.Path,
			Status: status, StartNs: start, EndNs: time.Now().UnixNano()})
	}
	mux.HandleFunc("/api/items/", func(w http.ResponseWriter, r *http.Request) {
		api(w, r, "GET", "/items/"+strings.TrimPrefix(r.URL.Path, "/api/items/"), nil)
	})
	mux.HandleFunc("/api/orders", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body) // sent with its length, not chunked
		api(w, r, "POST", "/orders", bytes.NewReader(body))
	})
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("ready")
	log.Fatal(http.Serve(ln, mux))
}
