package main

// cartlift adapt emporix FILE: the Emporix adapter over a file of webhook
// deliveries (an export, a replay), printing cartlift's v1 events as JSON
// lines, ready for POST /v1/events or any Kafka producer.

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/cartlift/cartlift/events/emporix"
)

// adaptDelivery is one line of the input: a delivery with its Svix
// message id and timestamp, or a bare webhook body.
type adaptDelivery struct {
	ID        string          `json:"id"`
	Timestamp time.Time       `json:"timestamp"`
	TypeHint  string          `json:"type_hint"`
	Body      json.RawMessage `json:"body"`
}

// fileView is the adapter's view over the owners the file's own snapshots
// gave.
type fileView map[string]emporix.Owner

func (v fileView) Owner(id string) (emporix.Owner, bool) { o, ok := v[id]; return o, ok }

func (v fileView) LatestShoppingCart(customerID string) (emporix.Owner, bool) {
	var best emporix.Owner
	found := false
	for _, o := range v {
		if o.CustomerID == customerID && o.Shopping() && (!found || o.ModifiedAt.After(best.ModifiedAt) || (o.ModifiedAt.Equal(best.ModifiedAt) && o.CartID < best.CartID)) {
			best, found = o, true
		}
	}
	return best, found
}

func runAdapt(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "emporix" {
		return &exitError{2, errors.New("usage: cartlift adapt emporix [-o FILE] FILE|-  (the one adapter is emporix)")}
	}
	fs := flag.NewFlagSet("adapt emporix", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("o", "", "write the events to FILE instead of stdout")
	fs.Usage = func() {
		fmt.Fprintln(stderr, `usage: cartlift adapt emporix [-o FILE] FILE|-

Reads Emporix webhook deliveries, one JSON object a line (or a JSON array):
{"id": "<svix-id>", "timestamp": "<RFC 3339>", "body": <the webhook body>},
or a bare webhook body {"type": ..., "data": {...}} (id and time then come
from the line's hash and the payload). Prints cartlift v1 events as JSON
lines. Item events wait for a snapshot of their cart later in the file;
those still waiting at the end are reported and make the exit code 1.`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return &exitError{2, errors.New("adapt emporix takes one file (- for stdin)")}
	}
	in := io.Reader(os.Stdin)
	if name := fs.Arg(0); name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	}
	w := stdout
	if *out != "" {
		f, err := os.Create(*out)
		if err != nil {
			return err
		}
		defer f.Close()
		w = f
	}
	deliveries, err := readDeliveries(in)
	if err != nil {
		return err
	}
	bw := bufio.NewWriter(w)
	view := fileView{}
	waiting := map[string][]emporix.Delivery{}
	nEvents, nIgnored, nFailed := 0, 0, 0
	write := func(outs []emporix.Out) {
		for _, o := range outs {
			bw.Write(o.Value)
			bw.WriteByte('\n')
			nEvents++
		}
	}
	for i, ad := range deliveries {
		typ, payload, err := emporix.ParseBody(ad.Body, ad.TypeHint)
		if err != nil {
			fmt.Fprintf(stderr, "delivery %d (%s): %v\n", i+1, ad.ID, err)
			nFailed++
			continue
		}
		d := emporix.Delivery{ID: ad.ID, Time: ad.Timestamp, Type: typ, Payload: payload}
		res, err := emporix.Translate(d, view)
		if err != nil {
			fmt.Fprintf(stderr, "delivery %d (%s): %v\n", i+1, ad.ID, err)
			nFailed++
			continue
		}
		if res.Wait != "" {
			waiting[res.Wait] = append(waiting[res.Wait], d)
			continue
		}
		if len(res.Events) == 0 {
			nIgnored++
		}
		write(res.Events)
		if res.Owner != nil {
			view[res.Owner.CartID] = *res.Owner
			for _, wd := range waiting[res.Owner.CartID] {
				if r, err := emporix.Translate(wd, view); err != nil {
					fmt.Fprintf(stderr, "delivery %s: %v\n", wd.ID, err)
					nFailed++
				} else {
					write(r.Events)
				}
			}
			delete(waiting, res.Owner.CartID)
		}
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	unresolved := 0
	for cart, ds := range waiting {
		for _, d := range ds {
			unresolved++
			fmt.Fprintf(stderr, "delivery %s (%s): %s: no snapshot of cart %s in the file\n", d.ID, d.Type, reasonEmporixUnknownCart, cart)
		}
	}
	fmt.Fprintf(stderr, "%d deliveries: %d events, %d ignored, %d failed, %d waiting for a cart never seen\n",
		len(deliveries), nEvents, nIgnored, nFailed, unresolved)
	if nFailed > 0 || unresolved > 0 {
		return &exitError{1, fmt.Errorf("%d deliveries failed, %d were not resolved", nFailed, unresolved)}
	}
	return nil
}

// readDeliveries reads a JSON array or JSON lines of deliveries.
func readDeliveries(in io.Reader) ([]adaptDelivery, error) {
	data, err := io.ReadAll(in)
	if err != nil {
		return nil, err
	}
	var raws []json.RawMessage
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) > 0 && trimmed[0] == '[' {
		if err := json.Unmarshal(trimmed, &raws); err != nil {
			return nil, fmt.Errorf("the JSON array: %w", err)
		}
	} else {
		for n, line := range bytes.Split(data, []byte{'\n'}) {
			if line = bytes.TrimSpace(line); len(line) > 0 {
				if !json.Valid(line) {
					return nil, fmt.Errorf("line %d is not JSON", n+1)
				}
				raws = append(raws, line)
			}
		}
	}
	out := make([]adaptDelivery, 0, len(raws))
	for _, raw := range raws {
		var d adaptDelivery
		if err := json.Unmarshal(raw, &d); err != nil || len(d.Body) == 0 {
			// A bare webhook body.
			sum := sha256.Sum256(raw)
			d = adaptDelivery{ID: "file-" + hex.EncodeToString(sum[:12]), Body: raw}
		}
		if d.ID == "" {
			sum := sha256.Sum256(d.Body)
			d.ID = "file-" + hex.EncodeToString(sum[:12])
		}
		out = append(out, d)
	}
	return out, nil
}
