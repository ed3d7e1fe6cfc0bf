// Command emailpreview renders the embedded reminder emails (English and
// German) with sample carts and screenshots them with headless Chromium at
// a phone and a desktop width, so that a person can look at them:
//
//	go run ./actions/emailpreview -out build/screenshots
//
// (`make email-screenshots`). It serves the HTML and the sample product
// images on a loopback port while Chromium loads them, and writes
// email-<lang>.html, email-<lang>.txt and email-<lang>-<width>.png to -out.
// One item of each cart has no image, to show the placeholder.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/cartlift/cartlift/actions"
	"github.com/cartlift/cartlift/events"
)

func main() {
	out := flag.String("out", "build/screenshots", "output directory")
	chromium := flag.String("chromium", "chromium", "the Chromium binary")
	widths := flag.String("widths", "400,1000", "viewport widths in CSS pixels, comma-separated")
	height := flag.Int("height", 1400, "viewport height in CSS pixels")
	flag.Parse()
	if err := run(*out, *chromium, *widths, *height); err != nil {
		fmt.Fprintln(os.Stderr, "emailpreview:", err)
		os.Exit(1)
	}
}

// sample is one email to preview.
type sample struct {
	lang     string
	decision events.Decision
}

func samples(imgBase string) []sample {
	decided := time.Date(2026, 3, 14, 16, 5, 0, 0, time.UTC)
	mk := func(locale, zone, name, cur string, items []events.Item) events.Decision {
		var total, count int64
		for _, it := range items {
			total += it.UnitPriceMinor * it.Quantity
			count += it.Quantity
		}
		return events.Decision{
			ID: "preview-" + locale, Template: "reminder", DecidedAt: decided, ValidUntil: decided.Add(48 * time.Hour),
			Discount: &events.Discount{Percent: 10, MaxMinor: 2500, ValidForSeconds: 48 * 3600},
			Cart:     events.CartSnapshot{CartID: "cart-1", Currency: cur, Items: items, TotalMinor: total, ItemCount: count},
			Customer: events.CustomerSnapshot{Key: "c-1", Name: name, Locale: locale, TimeZone: zone, MarketingConsent: true},
		}
	}
	return []sample{
		{"en", mk("en-US", "America/New_York", "Ada", "USD", []events.Item{
			{SKU: "JKT-1", Name: "Waterproof rain jacket", Quantity: 1, UnitPriceMinor: 18900, ImageURL: imgBase + "/p/jacket.png"},
			{SKU: "SCK-2", Name: "Merino wool hiking socks <3-pack>", Quantity: 2, UnitPriceMinor: 2450, ImageURL: imgBase + "/p/socks.png"},
			{SKU: "BTL-3", Name: "Insulated steel bottle, 750 ml", Quantity: 3, UnitPriceMinor: 1299},
		})},
		{"de", mk("de-DE", "Europe/Berlin", "Jürgen", "EUR", []events.Item{
			{SKU: "JKT-1", Name: "Wasserdichte Regenjacke", Quantity: 1, UnitPriceMinor: 17900, ImageURL: imgBase + "/p/jacket.png"},
			{SKU: "SCK-2", Name: "Merino-Wandersocken im Dreierpack", Quantity: 2, UnitPriceMinor: 2295, ImageURL: imgBase + "/p/socks.png"},
			{SKU: "BTL-3", Name: "Isolierflasche aus Edelstahl, 750 ml", Quantity: 3, UnitPriceMinor: 1199},
		})},
	}
}

// productImage draws a sample product picture: a coloured tile with a
// lighter disc.
func productImage(c color.RGBA) []byte {
	const n = 128
	img := image.NewRGBA(image.Rect(0, 0, n, n))
	for y := range n {
		for x := range n {
			dx, dy := x-n/2, y-n/2
			p := c
			if dx*dx+dy*dy < (n/3)*(n/3) {
				p = color.RGBA{uint8(min(255, int(c.R)+70)), uint8(min(255, int(c.G)+70)), uint8(min(255, int(c.B)+70)), 255}
			}
			img.SetRGBA(x, y, p)
		}
	}
	var b bytes.Buffer
	_ = png.Encode(&b, img)
	return b.Bytes()
}

func run(out, chromium, widths string, height int) error {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	base := "http://" + ln.Addr().String()
	files := map[string][]byte{
		"/p/jacket.png": productImage(color.RGBA{0x1d, 0x4e, 0x89, 255}),
		"/p/socks.png":  productImage(color.RGBA{0x8a, 0x5a, 0x2b, 255}),
	}
	tm, err := actions.DefaultTemplates()
	if err != nil {
		return err
	}
	cfg := actions.EmailConfig{From: "Nordwind Outdoor <shop@nordwind.example>", Branding: actions.Branding{Color: "#0b6e4f"}}.WithDefaults()
	var pages []string
	for _, s := range samples(base) {
		data := cfg.Branding.EmailData(s.decision, "https://nordwind.example/cart/cart-1?d=preview", "https://nordwind.example/unsubscribe?c=c-1")
		data.Discount.Code = "NW-7KQ4-M2XP"
		r, err := tm.RenderData(s.decision.Template, data)
		if err != nil {
			return err
		}
		name := "email-" + s.lang
		files["/"+name+".html"] = []byte(r.HTML)
		if err := os.WriteFile(filepath.Join(out, name+".html"), []byte(r.HTML), 0o644); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(out, name+".txt"), []byte("Subject: "+r.Subject+"\n\n"+r.Text), 0o644); err != nil {
			return err
		}
		pages = append(pages, name)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, ok := files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		if strings.HasSuffix(r.URL.Path, ".html") {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
		}
		_, _ = w.Write(b)
	})}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	for _, page := range pages {
		for _, ws := range strings.Split(widths, ",") {
			w, err := strconv.Atoi(strings.TrimSpace(ws))
			if err != nil || w <= 0 {
				return fmt.Errorf("width %q", ws)
			}
			png := filepath.Join(out, fmt.Sprintf("%s-%d.png", page, w))
			abs, err := filepath.Abs(png)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			cmd := exec.CommandContext(ctx, chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
				"--no-first-run", "--force-device-scale-factor=1", fmt.Sprintf("--window-size=%d,%d", w, height),
				"--screenshot="+abs, base+"/"+page+".html")
			msg, err := cmd.CombinedOutput()
			cancel()
			if err != nil {
				return fmt.Errorf("%s: %v\n%s", chromium, err, msg)
			}
			fmt.Println(png)
		}
	}
	return nil
}
