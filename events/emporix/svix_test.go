package emporix_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cartlift/cartlift/events/emporix"
)

// The example of Svix's "Verifying Webhooks Manually" and its libraries'
// tests: this secret, id, timestamp and body give this signature.
const (
	svixSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	svixID     = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	svixTS     = "1614265330"
	svixBody   = `{"test": 2432232314}`
	svixSig    = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

func svixNow() time.Time { return time.Unix(1614265330, 0).Add(30 * time.Second) }

func TestVerifySvixExample(t *testing.T) {
	v, err := emporix.NewVerifier(svixSecret, 0)
	if err != nil {
		t.Fatal(err)
	}
	ts, err := v.Verify(svixID, svixTS, svixSig, []byte(svixBody), svixNow())
	if err != nil {
		t.Fatalf("Svix's own example is refused: %v", err)
	}
	if ts.Unix() != 1614265330 {
		t.Fatalf("timestamp %v", ts)
	}
	if got := v.Sign(svixID, ts, []byte(svixBody)); got != svixSig {
		t.Fatalf("Sign = %s, want %s", got, svixSig)
	}
	// Key rotation: Svix sends one signature per active secret; one match
	// is enough, whatever its position. Unknown versions are skipped.
	for _, h := range []string{"v1,bm90IHRoaXMgb25l " + svixSig, svixSig + " v1,bm90IHRoaXMgb25l", "v2,xyz " + svixSig, "v1,%%% " + svixSig} {
		if _, err := v.Verify(svixID, svixTS, h, []byte(svixBody), svixNow()); err != nil {
			t.Errorf("%q: %v", h, err)
		}
	}
}

func TestVerifyRefuses(t *testing.T) {
	v, _ := emporix.NewVerifier(svixSecret, 0)
	other, _ := emporix.NewVerifier("whsec_"+"c29tZSBvdGhlciBzZWNyZXQgb2YgMjQgYnl0ZXM=", 0)
	body := []byte(svixBody)
	for _, c := range []struct {
		name          string
		id, ts, sig   string
		body          []byte
		now           time.Time
		v             *emporix.Verifier
		want          error
		wantInMessage string
	}{
		{"tampered body", svixID, svixTS, svixSig, []byte(`{"test": 2432232315}`), svixNow(), v, emporix.ErrSignature, ""},
		{"body with a space added", svixID, svixTS, svixSig, []byte(svixBody + " "), svixNow(), v, emporix.ErrSignature, ""},
		{"other id", "msg_p5jXN8AQM9LWM0D4loKWxJel", svixTS, svixSig, body, svixNow(), v, emporix.ErrSignature, ""},
		{"other timestamp", svixID, "1614265331", svixSig, body, svixNow(), v, emporix.ErrSignature, ""},
		{"wrong secret", svixID, svixTS, svixSig, body, svixNow(), other, emporix.ErrSignature, ""},
		{"v2 only", svixID, svixTS, "v2," + strings.TrimPrefix(svixSig, "v1,"), body, svixNow(), v, emporix.ErrSignature, ""},
		{"no signature", svixID, svixTS, "", body, svixNow(), v, emporix.ErrMissingHeaders, ""},
		{"no id", "", svixTS, svixSig, body, svixNow(), v, emporix.ErrMissingHeaders, ""},
		{"id with a space", "msg x", svixTS, svixSig, body, svixNow(), v, emporix.ErrMissingHeaders, ""},
		{"stale by 6 minutes", svixID, svixTS, svixSig, body, time.Unix(1614265330, 0).Add(6 * time.Minute), v, emporix.ErrStale, "tolerance is 5m0s"},
		{"from 6 minutes ahead", svixID, svixTS, svixSig, body, time.Unix(1614265330, 0).Add(-6 * time.Minute), v, emporix.ErrStale, ""},
		{"timestamp not a number", svixID, "2021-02-25T15:02:10Z", svixSig, body, svixNow(), v, emporix.ErrStale, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := c.v.Verify(c.id, c.ts, c.sig, c.body, c.now)
			if !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
			if !strings.Contains(err.Error(), c.wantInMessage) {
				t.Fatalf("err = %v, want it to say %q", err, c.wantInMessage)
			}
			if strings.Contains(err.Error(), "MfKQ9r8") {
				t.Fatalf("the error names the secret: %v", err)
			}
		})
	}
}

func TestNewVerifierRefusesBadSecrets(t *testing.T) {
	for _, s := range []string{"", "whsec_", "whsec_not base64!", "whsec_c2hvcnQ="} {
		if _, err := emporix.NewVerifier(s, 0); err == nil {
			t.Errorf("%q accepted", s)
		} else if s != "" && strings.Contains(err.Error(), strings.TrimPrefix(s, "whsec_")) && len(s) > 6 {
			t.Errorf("the error names the secret: %v", err)
		}
	}
}

// TestFixturesTamperedRefused signs every fixture delivery, flips each
// byte of its body in turn (the first 200), and demands refusal.
func TestFixturesTamperedRefused(t *testing.T) {
	v, _ := emporix.NewVerifier(testSecret, 0)
	wrong, _ := emporix.NewVerifier(svixSecret, 0)
	files, _ := filepath.Glob("testdata/*.json")
	checked := 0
	for _, file := range files {
		if strings.HasSuffix(file, ".golden.json") {
			continue
		}
		var fx fixture
		data, _ := os.ReadFile(file)
		if err := json.Unmarshal(data, &fx); err != nil {
			t.Fatal(err)
		}
		for _, d := range fx.Deliveries {
			body := []byte(d.Body)
			ts := strconv.FormatInt(d.Timestamp.Unix(), 10)
			sig := v.Sign(d.ID, d.Timestamp, body)
			now := d.Timestamp
			if _, err := v.Verify(d.ID, ts, sig, body, now); err != nil {
				t.Fatalf("%s: %v", d.ID, err)
			}
			if _, err := wrong.Verify(d.ID, ts, sig, body, now); !errors.Is(err, emporix.ErrSignature) {
				t.Fatalf("%s: accepted with the wrong secret: %v", d.ID, err)
			}
			for i := 0; i < len(body) && i < 200; i++ {
				bad := append([]byte(nil), body...)
				bad[i] ^= 0x01
				if _, err := v.Verify(d.ID, ts, sig, bad, now); !errors.Is(err, emporix.ErrSignature) {
					t.Fatalf("%s: byte %d changed and accepted: %v", d.ID, i, err)
				}
			}
			checked++
		}
	}
	if checked < 10 {
		t.Fatalf("checked %d deliveries", checked)
	}
}
