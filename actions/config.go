package actions

import (
	"errors"
	"fmt"
	"net/mail"
	"strings"
	"time"
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
	return errors.Join(errs...)
}
