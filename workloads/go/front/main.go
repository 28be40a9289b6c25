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
package main

import (
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
	mu sync.Mutex
	f  *os.File
}

func (t *truth) write(r record) {
	if t.f == nil {
		return
	}
	r.Service, r.Protocol, r.Pid = "go-front", "http1", os.Getpid()
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
	flag.Parse()

	var gt truth
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
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("ready")
	log.Fatal(http.Serve(ln, mux))
}
