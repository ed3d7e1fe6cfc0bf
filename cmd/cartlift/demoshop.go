package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"html/template"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	json "github.com/goccy/go-json"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/cartlift/cartlift/actions"
	"github.com/cartlift/cartlift/events"
	"github.com/cartlift/cartlift/internal/refusal"
	"github.com/cartlift/cartlift/processor"
)

// demoShop is the shop of `cartlift demo`: where the reminders' resume
// links land (through the signed-link server, which records the click),
// and where a person completes the order by hand.
//
//   - GET /cart/{cart_id}?c={customer_key}&d={decision_id}: the cart as
//     the processor's API has it (GET /v1/customers/{id}/carts/{cartId}),
//     its lines with quantity × unit price and line totals, the total,
//     and a "Complete order" button;
//   - POST /cart/{cart_id}/order (form field c, the customer key):
//     produces checkout.completed for the cart as the API has it now
//     (its total, an order id), keyed by the customer key, to the input
//     topic, then redirects to the cart's page, which thanks for the
//     order. The event id names the cart and its version, so a second
//     click on the same cart is the same event (the processor drops
//     repeats).
//
// Anything else answers 404 without reading the body.
type demoShop struct {
	url      string // http://127.0.0.1:<port>
	api      string // the processor's API, http://host:port
	topic    string // the input topic
	name     string // the shop's name atop the page
	producer *kgo.Client
	client   *http.Client
	srv      *http.Server
	now      func() time.Time
}

// demoShopName is the demo shop's name, on its page and in its emails.
const demoShopName = "cartlift demo shop"

// startDemoShop listens on 127.0.0.1 (port 8090 when free) and serves the
// shop; close stops it.
func startDemoShop(cfg httpConfig, apiAddr string, brokers []string, topic string, log *slog.Logger) (*demoShop, error) {
	port, err := demoFreePort(8090)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return nil, err
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.RequiredAcks(kgo.AllISRAcks()))
	if err != nil {
		ln.Close()
		return nil, err
	}
	s := &demoShop{url: "http://" + ln.Addr().String(), api: "http://" + apiAddr, topic: topic, name: demoShopName,
		producer: cl, client: &http.Client{Timeout: 5 * time.Second}, now: time.Now}
	s.srv = startHTTPServer(cfg, ln, s.handler(), "demo shop", log)
	return s, nil
}

func (s *demoShop) close() {
	_ = s.srv.Close()
	s.producer.Close()
}

// cartURL is the template of CARTLIFT_CART_URL that lands on this shop.
func (s *demoShop) cartURL() string {
	return s.url + "/cart/{cart_id}?c={customer_key}&d={decision_id}"
}

func (s *demoShop) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /cart/{cart}", s.page)
	mux.HandleFunc("POST /cart/{cart}/order", s.order)
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		refusal.Refuse(w, http.StatusNotFound, "text/plain; charset=utf-8", []byte("not found\n"))
	})
	return mux
}

// errNoCart is a cart the API does not know.
var errNoCart = errors.New("no such cart")

// cart reads a customer's cart from the processor's API.
func (s *demoShop) cart(ctx context.Context, customer, cartID string) (processor.CartView, error) {
	// The key escaped as the API documents it: anon%3Ag-17.
	u := s.api + "/v1/customers/" + strings.ReplaceAll(url.PathEscape(customer), ":", "%3A") + "/carts/" + url.PathEscape(cartID)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return processor.CartView{}, err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return processor.CartView{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return processor.CartView{}, err
	}
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return processor.CartView{}, errNoCart
	case resp.StatusCode != http.StatusOK:
		return processor.CartView{}, fmt.Errorf("cart API: %s: %s", resp.Status, bytes.TrimSpace(body))
	}
	var cr processor.CartResponse
	if err := json.Unmarshal(body, &cr); err != nil {
		return processor.CartView{}, fmt.Errorf("cart API: %w", err)
	}
	return cr.Cart, nil
}

// shopLine is one cart line on the page.
type shopLine struct {
	Name, SKU, Quantity, Unit, Total string
}

// shopPage is what the page template shows.
type shopPage struct {
	Shop, Title, Customer, CartID, Decision string
	Lines                                   []shopLine
	Items, Total                            string
	Ordered                                 string // the order id just placed
	Closed                                  string // why the cart cannot be ordered
	Problem                                 string // the cart could not be shown
	Action                                  string // the form's target
}

func (s *demoShop) page(w http.ResponseWriter, r *http.Request) {
	cartID, customer := r.PathValue("cart"), r.URL.Query().Get("c")
	p := shopPage{Shop: s.name, Title: "Your cart", Customer: customer, CartID: cartID, Decision: r.URL.Query().Get("d"),
		Ordered: r.URL.Query().Get("ordered")}
	status := http.StatusOK
	c, err := s.cart(r.Context(), customer, cartID)
	switch {
	case customer == "":
		p.Problem, status = "This link names no customer.", http.StatusBadRequest
	case errors.Is(err, errNoCart):
		p.Problem, status = "We could not find this cart.", http.StatusNotFound
	case err != nil:
		p.Problem, status = "The shop cannot show your cart right now: "+err.Error(), http.StatusServiceUnavailable
	default:
		p.fill(c)
		p.Action = "/cart/" + url.PathEscape(cartID) + "/order"
	}
	if p.Ordered != "" {
		p.Title, p.Closed = "Thank you for your order", ""
	}
	writeShopPage(w, status, p)
}

// fill shows cart c.
func (p *shopPage) fill(c processor.CartView) {
	for _, it := range c.Items {
		name := it.Name
		if name == "" {
			name = it.SKU
		}
		p.Lines = append(p.Lines, shopLine{Name: name, SKU: it.SKU, Quantity: num(it.Quantity),
			Unit: money(it.UnitPriceMinor, c.Currency), Total: money(it.LineTotalMinor, c.Currency)})
	}
	p.Items = plural(c.ItemCount, "item", "items")
	p.Total = money(c.TotalMinor, c.Currency)
	switch c.Status {
	case "checked_out":
		p.Closed = "This cart has been ordered"
		if c.OrderID != "" {
			p.Closed += " (order " + c.OrderID + ")"
		}
		p.Closed += "."
	case "discarded", "merged":
		p.Closed = "This cart is no longer available (" + c.Status + ")."
	}
	if len(c.Items) == 0 && p.Closed == "" {
		p.Closed = "This cart is empty."
	}
}

func (s *demoShop) order(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 4096)
	if err := r.ParseForm(); err != nil {
		writeShopPage(w, http.StatusBadRequest, shopPage{Shop: s.name, Title: "Your cart", Problem: "The order form was not understood."})
		return
	}
	cartID, customer := r.PathValue("cart"), r.PostForm.Get("c")
	back := "/cart/" + url.PathEscape(cartID) + "?c=" + url.QueryEscape(customer)
	c, err := s.cart(r.Context(), customer, cartID)
	if err != nil {
		http.Redirect(w, r, back, http.StatusSeeOther) // the page says what is wrong
		return
	}
	var p shopPage
	if p.fill(c); p.Closed != "" {
		http.Redirect(w, r, back, http.StatusSeeOther)
		return
	}
	orderID, v, err := s.checkout(customer, c)
	if err == nil {
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		err = s.producer.ProduceSync(ctx, &kgo.Record{Topic: s.topic, Key: []byte(customer), Value: v}).FirstErr()
		cancel()
	}
	if err != nil {
		p := shopPage{Shop: s.name, Title: "Your cart", Problem: "We could not place your order right now: " + err.Error()}
		writeShopPage(w, http.StatusServiceUnavailable, p)
		return
	}
	http.Redirect(w, r, back+"&ordered="+url.QueryEscape(orderID), http.StatusSeeOther)
}

// checkout is the checkout.completed of cart c of customer, as the demo
// shop produces it: source "demo-shop", id and order id from the cart id
// and version.
func (s *demoShop) checkout(customer string, c processor.CartView) (orderID string, value []byte, err error) {
	ref := events.CartRef{CartID: c.ID, CartType: c.Type, Site: c.Site, Channel: c.Channel, Currency: c.Currency, LegalEntity: c.LegalEntity}
	if anon, ok := strings.CutPrefix(customer, events.AnonPrefix); ok {
		ref.AnonymousID = anon
	} else {
		ref.CustomerID = customer
	}
	version := strconv.FormatInt(c.Version, 10)
	orderID = "o-shop-" + c.ID + "-" + version
	value, err = events.Encode("shop-order-"+c.ID+"-"+version, "demo-shop", events.TypeCheckoutCompleted, s.now().UTC(), "",
		events.CheckoutCompleted{CartRef: ref, OrderID: orderID, TotalMinor: c.TotalMinor})
	return orderID, value, err
}

func writeShopPage(w http.ResponseWriter, status int, p shopPage) {
	var b bytes.Buffer
	if err := shopTemplate.Execute(&b, p); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(b.Bytes())
}

var shopTemplate = template.Must(template.New("shop").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}} · {{.Shop}}</title>
<style>
body{margin:0;background:#f4f5f7;color:#1d2430;font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
header{background:#2f5d8a;color:#fff;padding:14px 24px;font-weight:600;font-size:18px}
main{max-width:760px;margin:32px auto;padding:0 16px}
.card{background:#fff;border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.12);padding:24px}
h1{font-size:24px;margin:0 0 4px}
.sub{color:#5b6472;margin:0 0 20px;font-size:14px}
table{width:100%;border-collapse:collapse}
th{text-align:left;font-size:13px;color:#5b6472;font-weight:600;border-bottom:1px solid #dde1e6;padding:8px 6px}
td{border-bottom:1px solid #eef0f3;padding:10px 6px;vertical-align:top}
.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
.sku{color:#5b6472;font-size:13px}
tfoot td{border-bottom:0;font-weight:700;font-size:18px;padding-top:14px}
button{margin-top:20px;background:#2f5d8a;color:#fff;border:0;border-radius:6px;padding:12px 28px;font-size:16px;font-weight:600;cursor:pointer}
button:hover{background:#264d73}
.note{margin:0 0 16px;padding:12px 14px;border-radius:6px;background:#e8f4ec;color:#1f5130}
.warn{background:#fdf1e4;color:#7a4510}
.foot{color:#5b6472;font-size:13px;margin-top:18px}
</style></head>
<body><header>{{.Shop}}</header>
<main><div class="card">
<h1>{{.Title}}</h1>
<p class="sub">{{if .CartID}}Cart {{.CartID}}{{end}}{{if .Customer}} · {{.Customer}}{{end}}{{if .Items}} · {{.Items}}{{end}}</p>
{{if .Ordered}}<p class="note">Order {{.Ordered}} is placed: the shop sent <code>checkout.completed</code>, and the recovery report counts it.</p>{{end}}
{{if .Problem}}<p class="note warn">{{.Problem}}</p>{{else}}
{{if and .Closed (not .Ordered)}}<p class="note warn">{{.Closed}}</p>{{end}}
<table>
<thead><tr><th>Item</th><th class="num">Quantity</th><th class="num">Unit price</th><th class="num">Total</th></tr></thead>
<tbody>{{range .Lines}}
<tr><td>{{.Name}}<div class="sku">{{.SKU}}</div></td><td class="num">{{.Quantity}}</td><td class="num">{{.Unit}}</td><td class="num">{{.Total}}</td></tr>{{end}}
</tbody>
<tfoot><tr><td colspan="3">Total</td><td class="num">{{.Total}}</td></tr></tfoot>
</table>
{{if not (or .Closed .Ordered)}}<form method="post" action="{{.Action}}"><input type="hidden" name="c" value="{{.Customer}}"><button type="submit">Complete order</button></form>{{end}}
{{end}}
<p class="foot">The demo's shop: the cart comes from cartlift's API; completing the order produces <code>checkout.completed</code> on the input topic.</p>
</div></main></body></html>
`))

// How the demo's shoppers answer reminders (shopper.Response).
const (
	// demoDefaultEffect is -effect's default: +5 pp.
	demoDefaultEffect = 0.05
	// demoResponseBase is the holdout's conversion after a reminder.
	demoResponseBase = 0.15
	// demoClickShare is the share of emails clicked by shoppers who do
	// not come back because of them.
	demoClickShare = 0.2
	// demoResponseAfter is the longest delay from a reminder to a return
	// or click: the demo flows compress the default cadence (1 h, 24 h,
	// 72 h) into 10, 20 and 30 s, and a real shop's answers spread over
	// hours, so here they spread over 0.5–30 s, most of them early.
	demoResponseAfter = 30 * time.Second
	// demoDrain is how long the demo goes on, once no new shoppers come,
	// for the shoppers reminded by then to come back, so that the last
	// ones count for their reminders as the first ones did.
	demoDrain = 20 * time.Second
)

// signedPP formats an absolute effect in percentage points, with its sign.
func signedPP(v float64) string { return fmt.Sprintf("%+.1f pp", 100*v) }

// demoLinkConfig is the signed-link server of the demo's actions role.
type demoLinkConfig struct {
	addr    string // listen address, 127.0.0.1:<port>
	base    string // CARTLIFT_LINK_BASE_URL, "" without links
	secret  string
	cartURL string
}

// demoLinkSecret signs the demo's links.
const demoLinkSecret = "demo-link-secret-0123456789abcdef0123"

// demoLinks picks the link server's address (127.0.0.1:8081 when free)
// and sends resume links on to shop; without a shop, no signed links.
func demoLinks(shop *demoShop) (demoLinkConfig, error) {
	if shop == nil {
		return demoLinkConfig{}, nil
	}
	port, err := demoFreePort(8081)
	if err != nil {
		return demoLinkConfig{}, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	return demoLinkConfig{addr: addr, base: "http://" + addr, secret: demoLinkSecret, cartURL: shop.cartURL()}, nil
}

// demoClicker clicks the resume links of the emails the simulated
// shoppers click (shopper.Answer), through the link server, which records
// link.clicked; it does not follow the redirect to the shop.
type demoClicker struct {
	links           demoLinkConfig
	signer          actions.LinkSigner
	client          *http.Client
	stopped         atomic.Bool
	clicked, failed atomic.Int64
}

func newDemoClicker(links demoLinkConfig) *demoClicker {
	return &demoClicker{links: links, signer: actions.LinkSigner{Secret: []byte(links.secret)},
		client: &http.Client{Timeout: 5 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// click clicks d's resume link at at (at once when at has passed).
func (c *demoClicker) click(d events.Decision, at time.Time) {
	if c == nil || c.links.base == "" {
		return
	}
	url := c.links.base + "/r/" + c.signer.Token(actions.LinkResume, d.ID, d.Customer.Key, d.Cart.CartID, time.Now().Add(actions.DefaultLinkTTL))
	time.AfterFunc(time.Until(at), func() {
		if c.stopped.Load() {
			return
		}
		resp, err := c.client.Get(url)
		if err == nil {
			resp.Body.Close()
		}
		if err != nil || resp.StatusCode != http.StatusFound {
			c.failed.Add(1)
			return
		}
		c.clicked.Add(1)
	})
}

// stop ends the clicks still to come (before the link server stops).
func (c *demoClicker) stop() {
	if c != nil {
		c.stopped.Store(true)
	}
}
