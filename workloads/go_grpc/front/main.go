// Command front is a grpc-go front tier for the tracer's tests and harness:
// each call of /front.Front/Call (a google.protobuf.StringValue holding the
// request id) makes one HTTP call to the backend, at <backend>/ok/<id>,
// through one shared keep-alive http.Client. No header is forwarded: the link
// between the RPC and the call is the tracer's own work (docs/golang.md).
//
//	front -listen 127.0.0.1:8080 -backend http://127.0.0.1:8081 [-groundtruth FILE]
//
// The service is declared by hand (grpc.ServiceDesc) on a well-known message
// type, so no generated code is needed. It prints "ready" once listening.
// Ground truth (-groundtruth) is one JSON line per RPC handled and per call
// made, in workloads/groundtruth.py's format: the call's record carries the id
// of the RPC it was made for.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	wrapperspb "github.com/golang/protobuf/ptypes/wrappers"
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
	r.Service, r.Pid = "go-grpc-front", os.Getpid()
	line, _ := json.Marshal(r)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.f.Write(append(line, '\n')) // one write per line: O_APPEND keeps lines whole
}

type front struct {
	client  *http.Client
	backend string
	gt      *truth
}

const method = "/front.Front/Call"

func (f *front) call(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	start := time.Now().UnixNano()
	id := in.GetValue()
	path := "/ok/" + id
	status := 0
	resp, err := f.client.Get(f.backend + path)
	if err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		status = resp.StatusCode
	}
	f.gt.write(record{Kind: "client", Protocol: "http1", RequestID: id, Method: "GET",
		Path: path, Status: status, StartNs: start, EndNs: time.Now().UnixNano(),
		Peer: f.backend})
	code := 200 // the HTTP status of a gRPC response, as the tracer's spans have it
	var out *wrapperspb.StringValue
	if err != nil {
		err = status_(codes.Unavailable, err)
	} else {
		out = &wrapperspb.StringValue{Value: fmt.Sprintf("front %s: backend %d", id, status)}
	}
	f.gt.write(record{Kind: "server", Protocol: "grpc", RequestID: id, Method: "POST",
		Path: method, Status: code, StartNs: start, EndNs: time.Now().UnixNano()})
	return out, err
}

func status_(c codes.Code, err error) error { return status.Error(c, err.Error()) }

type frontServer interface {
	call(context.Context, *wrapperspb.StringValue) (*wrapperspb.StringValue, error)
}

var serviceDesc = grpc.ServiceDesc{
	ServiceName: "front.Front",
	HandlerType: (*frontServer)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Call",
		Handler: func(srv interface{}, ctx context.Context, dec func(interface{}) error,
			_ grpc.UnaryServerInterceptor) (interface{}, error) {
			in := new(wrapperspb.StringValue)
			if err := dec(in); err != nil {
				return nil, err
			}
			return srv.(frontServer).call(ctx, in)
		},
	}},
}

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "address to serve on")
	backend := flag.String("backend", "http://127.0.0.1:8081", "backend base URL")
	gtPath := flag.String("groundtruth", "", "ground-truth JSON lines file")
	flag.Parse()

	gt := &truth{}
	if *gtPath != "" {
		f, err := os.OpenFile(*gtPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			log.Fatal(err)
		}
		gt.f = f
	}
	transport := &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: time.Minute}
	f := &front{client: &http.Client{Transport: transport, Timeout: 10 * time.Second},
		backend: *backend, gt: gt}
	srv := grpc.NewServer()
	srv.RegisterService(&serviceDesc, f)
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("ready")
	log.Fatal(srv.Serve(ln))
}
