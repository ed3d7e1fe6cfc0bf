package actions

import (
	"context"
	"errors"
	"fmt"
	"net/textproto"

	gomail "github.com/wneessen/go-mail"
)

// Email is one rendered message, ready to send.
type Email struct {
	To        string
	ToName    string
	Subject   string
	HTML      string
	Text      string
	MessageID string            // without angle brackets; derived from the decision id
	Headers   map[string]string // extra headers (List-Unsubscribe, ...)
}

// Sender delivers one email. An error is a *DeliveryError telling whether
// retrying can help.
type Sender interface {
	Send(ctx context.Context, e Email) error
}

// DeliveryError is a failed delivery. Permanent errors (SMTP 5xx, an
// invalid message or address) must not be retried; transient ones (SMTP
// 4xx, network errors, timeouts) may succeed later.
type DeliveryError struct {
	Permanent bool
	Code      int // SMTP reply code, 0 when the server gave none
	Err       error
}

// Error implements error.
func (e *DeliveryError) Error() string {
	kind := "transient"
	if e.Permanent {
		kind = "permanent"
	}
	if e.Code != 0 {
		return fmt.Sprintf("%s delivery error (SMTP %d): %v", kind, e.Code, e.Err)
	}
	return fmt.Sprintf("%s delivery error: %v", kind, e.Err)
}

// Unwrap returns the underlying error.
func (e *DeliveryError) Unwrap() error { return e.Err }

// IsPermanent reports whether err is a permanent delivery failure.
func IsPermanent(err error) bool {
	var de *DeliveryError
	return errors.As(err, &de) && de.Permanent
}

// Classify turns an SMTP client error into a *DeliveryError: a 5xx reply is
// permanent, a 4xx reply, a network error or anything without a reply code
// is transient.
func Classify(err error) *DeliveryError {
	if err == nil {
		return nil
	}
	var de *DeliveryError
	if errors.As(err, &de) {
		return de
	}
	code := 0
	var se *gomail.SendError
	var te *textproto.Error
	if errors.As(err, &se) {
		code = se.ErrorCode()
	}
	if code == 0 && errors.As(err, &te) {
		code = te.Code
	}
	return &DeliveryError{Permanent: code >= 500 && code < 600, Code: code, Err: err}
}

// SMTPSender sends emails through an SMTP server with go-mail, one
// connection per email.
type SMTPSender struct {
	cfg  EmailConfig
	opts []gomail.Option
}

// NewSMTPSender validates cfg (with defaults applied) and returns a sender.
func NewSMTPSender(cfg EmailConfig) (*SMTPSender, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	policy := gomail.TLSOpportunistic
	switch cfg.TLSPolicy {
	case TLSMandatory:
		policy = gomail.TLSMandatory
	case TLSNone:
		policy = gomail.NoTLS
	}
	opts := []gomail.Option{
		gomail.WithPort(cfg.Port),
		gomail.WithTLSPolicy(policy),
		gomail.WithTimeout(cfg.Timeout),
	}
	if cfg.Username != "" {
		opts = append(opts,
			gomail.WithSMTPAuth(gomail.SMTPAuthAutoDiscover),
			gomail.WithUsername(cfg.Username),
			gomail.WithPassword(cfg.Password))
	}
	// Fail fast on options the library rejects.
	if _, err := gomail.NewClient(cfg.Host, opts...); err != nil {
		return nil, fmt.Errorf("email: %w", err)
	}
	return &SMTPSender{cfg: cfg, opts: opts}, nil
}

// Send delivers e. Address and message errors are permanent.
func (s *SMTPSender) Send(ctx context.Context, e Email) error {
	m := gomail.NewMsg()
	if err := m.From(s.cfg.From); err != nil {
		return &DeliveryError{Permanent: true, Err: fmt.Errorf("from: %w", err)}
	}
	if err := m.AddToFormat(e.ToName, e.To); err != nil {
		return &DeliveryError{Permanent: true, Err: fmt.Errorf("to: %w", err)}
	}
	m.Subject(e.Subject)
	if e.MessageID != "" {
		m.SetMessageIDWithValue(e.MessageID)
	} else {
		m.SetMessageID()
	}
	m.SetDate()
	for k, v := range e.Headers {
		m.SetGenHeader(gomail.Header(k), v)
	}
	m.SetBodyString(gomail.TypeTextPlain, e.Text)
	if e.HTML != "" {
		m.AddAlternativeString(gomail.TypeTextHTML, e.HTML)
	}
	c, err := gomail.NewClient(s.cfg.Host, s.opts...)
	if err != nil {
		return &DeliveryError{Permanent: true, Err: err}
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	if err := c.DialAndSendWithContext(ctx, m); err != nil {
		return Classify(err)
	}
	return nil
}
