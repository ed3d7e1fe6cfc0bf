package actions

import (
	"errors"
	"fmt"
	"net/mail"
	"net/url"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// TLS policies of EmailConfig.TLSPolicy.
const (
	// TLSOpportunistic upgrades the connection with STARTTLS when the server
	// offers it and continues in plain text otherwise (the default).
	TLSOpportunistic = "opportunistic"
	// TLSMandatory refuses to send unless STARTTLS succeeds.
	TLSMandatory = "mandatory"
	// TLSNone never uses STARTTLS (local mail catchers only).
	TLSNone = "none"
)

// Defaults applied by EmailConfig.WithDefaults to zero fields.
const (
	DefaultSMTPHost    = "localhost"
	DefaultSMTPPort    = 587
	DefaultSMTPTimeout = 10 * time.Second
)

// EmailConfig configures the SMTP sender and the links of the emails.
//
// Defaults (see WithDefaults): Host "localhost", Port 587, TLSPolicy
// "opportunistic", Timeout 10s. From is required. Authentication is used
// only when Username is set (the mechanism is negotiated with the server).
//
// ResumeURLTemplate and UnsubscribeURL are URL templates in which the
// placeholders {decision_id}, {cart_id}, {customer_key} and {customer_id}
// are replaced by the path-escaped values of the decision, e.g.
// "https://shop.example/cart/{cart_id}?d={decision_id}". Both are required
// unless signed links are configured.
//
// Signed links: with LinkSecret and LinkBaseURL set, the resume link is
// LinkBaseURL + "/r/<token>" and the unsubscribe link (also in the
// List-Unsubscribe header) LinkBaseURL + "/u/<token>", tokens signed by a
// LinkSigner and valid for LinkTTL (default 30 days); a LinkHandler serves
// them.
type EmailConfig struct {
	Host              string
	Port              int
	Username          string
	Password          string
	From              string
	TLSPolicy         string
	Timeout           time.Duration
	UnsubscribeURL    string
	ResumeURLTemplate string
	LinkSecret        []byte
	LinkBaseURL       string
	LinkTTL           time.Duration
	// Branding is what the HTML layout shows of the shop.
	Branding Branding
}

// DefaultBrandColor is the brand colour of the layout when none is set.
const DefaultBrandColor = "#2f5d8a"

// Branding is the shop's identity in the emails' layout.
//
// ShopName heads every email; when empty, WithDefaults takes the display
// name of EmailConfig.From, else the domain of its address. Color is the
// brand colour of the header bar and the button, "#rgb" or "#rrggbb"
// (DefaultBrandColor when empty); the text on it is white or black,
// whichever contrasts more. ImageURL is the catalog's image URL for items
// whose event carries no image_url: "{sku}" in it is replaced by the
// path-escaped SKU, e.g. "https://cdn.shop.example/p/{sku}.jpg"; a relative
// image_url is resolved against it. An item with neither gets a
// placeholder.
type Branding struct {
	ShopName string
	Color    string
	ImageURL string
}

// ParseColor returns a colour given as "#rgb" or "#rrggbb" (hex digits,
// either case) as "#rrggbb" in lower case, or an error.
func ParseColor(s string) (string, error) {
	h := strings.TrimPrefix(s, "#")
	if !strings.HasPrefix(s, "#") || (len(h) != 3 && len(h) != 6) || strings.Trim(strings.ToLower(h), "0123456789abcdef") != "" {
		return "", fmt.Errorf("%q is not a colour like #1a73e8 or #17e", s)
	}
	h = strings.ToLower(h)
	if len(h) == 3 {
		h = string([]byte{h[0], h[0], h[1], h[1], h[2], h[2]})
	}
	return "#" + h, nil
}

// CheckImageURL checks a catalog image URL template (Branding.ImageURL):
// an absolute http(s) URL containing "{sku}".
func CheckImageURL(s string) error {
	u, err := url.Parse(strings.ReplaceAll(s, "{sku}", "sku"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q is not an absolute http(s) URL", s)
	}
	if !strings.Contains(s, "{sku}") {
		return fmt.Errorf("%q lacks the {sku} placeholder", s)
	}
	return nil
}

// maxShopName bounds Branding.ShopName.
const maxShopName = 100

// CheckShopName checks a shop name: at most 100 characters, no control
// characters.
func CheckShopName(s string) error {
	if utf8.RuneCountInString(s) > maxShopName {
		return fmt.Errorf("longer than %d characters", maxShopName)
	}
	if strings.IndexFunc(s, unicode.IsControl) >= 0 {
		return errors.New("contains a control character")
	}
	return nil
}

// withDefaults fills in the shop name from the sender and the colour.
func (b Branding) withDefaults(from string) Branding {
	if b.ShopName == "" {
		if a, err := mail.ParseAddress(from); err == nil {
			b.ShopName = a.Name
			if b.ShopName == "" {
				_, b.ShopName, _ = strings.Cut(a.Address, "@")
			}
		}
	}
	if b.Color == "" {
		b.Color = DefaultBrandColor
	}
	return b
}

// Validate reports every problem of the branding.
func (b Branding) Validate() error {
	var errs []error
	if err := CheckShopName(b.ShopName); err != nil {
		errs = append(errs, fmt.Errorf("email: shop name: %w", err))
	}
	if b.Color != "" {
		if _, err := ParseColor(b.Color); err != nil {
			errs = append(errs, fmt.Errorf("email: brand colour: %w", err))
		}
	}
	if b.ImageURL != "" {
		if err := CheckImageURL(b.ImageURL); err != nil {
			errs = append(errs, fmt.Errorf("email: image URL: %w", err))
		}
	}
	return errors.Join(errs...)
}

// SignedLinks reports whether signed links are configured.
func (c EmailConfig) SignedLinks() bool { return len(c.LinkSecret) > 0 && c.LinkBaseURL != "" }

// WithDefaults returns a copy of c with the documented defaults filled in.
func (c EmailConfig) WithDefaults() EmailConfig {
	if c.Host == "" {
		c.Host = DefaultSMTPHost
	}
	if c.Port == 0 {
		c.Port = DefaultSMTPPort
	}
	if c.TLSPolicy == "" {
		c.TLSPolicy = TLSOpportunistic
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultSMTPTimeout
	}
	if c.LinkTTL == 0 {
		c.LinkTTL = DefaultLinkTTL
	}
	c.Branding = c.Branding.withDefaults(c.From)
	return c
}

// Validate reports every problem of a configuration (after WithDefaults).
func (c EmailConfig) Validate() error {
	var errs []error
	if c.Port <= 0 || c.Port > 65535 {
		errs = append(errs, fmt.Errorf("email: port %d out of range", c.Port))
	}
	if _, err := mail.ParseAddress(c.From); err != nil {
		errs = append(errs, fmt.Errorf("email: from %q: %w", c.From, err))
	}
	switch c.TLSPolicy {
	case TLSOpportunistic, TLSMandatory, TLSNone:
	default:
		errs = append(errs, fmt.Errorf("email: TLS policy %q is not one of opportunistic, mandatory, none", c.TLSPolicy))
	}
	if c.Timeout < 0 {
		errs = append(errs, errors.New("email: negative timeout"))
	}
	if c.Password != "" && c.Username == "" {
		errs = append(errs, errors.New("email: password without username"))
	}
	if c.LinkTTL < 0 {
		errs = append(errs, errors.New("email: negative link TTL"))
	}
	if (len(c.LinkSecret) > 0) != (c.LinkBaseURL != "") {
		errs = append(errs, errors.New("email: signed links need both a link secret and a link base URL"))
	}
	urls := map[string]string{"resume URL template": c.ResumeURLTemplate, "unsubscribe URL": c.UnsubscribeURL}
	if c.SignedLinks() {
		urls = map[string]string{"link base URL": c.LinkBaseURL}
	}
	for name, v := range urls {
		if !strings.HasPrefix(v, "https://") && !strings.HasPrefix(v, "http://") {
			errs = append(errs, fmt.Errorf("email: %s %q must be an http(s) URL", name, v))
		}
	}
	if err := c.Branding.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
