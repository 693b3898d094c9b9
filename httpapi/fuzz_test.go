package httpapi

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/resolutionflow/ledgerd/domain"
)

// FuzzParseCreate checks that a create body either parses into a valid
// request, which survives a round trip through JSON, or is refused with 400
// or 422; never anything else, never a panic.
func FuzzParseCreate(f *testing.F) {
	for _, body := range []string{
		`{"intent":"park"}`,
		`{"intent":"escalate","engineer_notes":"VPN drops every 20 min","priority":"high"}`,
		`{"intent":"escalate","engineer_notes":null,"priority":null}`,
		`{"intent":"park","engineer_notes":"caf\u00e9 \ud83d\ude00 \\ud800 \ufffd ✓"}`,
		`{"intent":"park","engineer_notes":"a\ud800b"}`,
		"{\"intent\":\"park\",\"engineer_notes\":\"caf\xe9\"}",
		`{"intent":"park","engineer_notes":"a\u0000b"}`,
		`{"\u0069ntent":"park","Intent":"escalate"}`,
		`{"intent":"park","intent":"escalate"}`,
		`{"intent" "park"}`, `[{"intent":"park"}]`, `null`, ``, `{"intent":"park"} {}`,
		`{"intent":1}`, `{"intent":"park","priority":["high"]}`, `{"intent":"park","assignee":"bob"}`,
	} {
		f.Add([]byte(body))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := parseCreate(body)
		if err != nil {
			var he *echo.HTTPError
			if !(errors.As(err, &he) && he.Code == http.StatusBadRequest) && domain.ErrorCode(err) != domain.EINVALID {
				t.Fatalf("parseCreate(%q) = %v, want a 400 or a 422", body, err)
			}
			return
		}
		// Every string of an accepted body is a known name or a checked
		// value, so the body is valid UTF-8.
		if !utf8.Valid(body) {
			t.Fatalf("parseCreate accepted %q, which is not valid UTF-8", body)
		}
		if _, err := domain.ParseIntent(string(req.intent)); err != nil {
			t.Fatalf("parseCreate(%q) gave intent %q: %v", body, req.intent, err)
		}
		if _, err := domain.ParsePriority(string(req.priority)); err != nil || req.priority == "" {
			t.Fatalf("parseCreate(%q) gave priority %q: %v", body, req.priority, err)
		}
		if !utf8.ValidString(req.notes) {
			t.Fatalf("parseCreate(%q) gave notes %q, not valid UTF-8", body, req.notes)
		}
		again, err := json.Marshal(map[string]string{"intent": string(req.intent), "engineer_notes": req.notes, "priority": string(req.priority)})
		if err != nil {
			t.Fatal(err)
		}
		if got, err := parseCreate(again); err != nil || got != req {
			t.Fatalf("round trip of %q through %s = %+v, %v; want %+v", body, again, got, err, req)
		}
	})
}

// FuzzVerify signs a header and a payload with the server's secret and
// checks that verify either returns the actor the payload names, read
// with exact claim names, or a 401; that a payload repeating a name or
// spelling a known claim in another case never verifies; and that the
// remembered token gives the same answer.
func FuzzVerify(f *testing.F) {
	secret := []byte("fuzz secret of the token verifier")
	now := time.Now()
	claims := func(extra string) []byte {
		return fmt.Appendf(nil, `{"sub":%q,"account_id":%q,"team_id":%q,"role":"viewer","exp":%d%s}`,
			uuid.New(), uuid.New(), uuid.New(), now.Add(time.Hour).Unix(), extra)
	}
	hs256 := []byte(`{"alg":"HS256","typ":"JWT"}`)
	for _, seed := range []struct{ header, payload []byte }{
		{hs256, claims("")},
		{hs256, claims(fmt.Sprintf(`,"iat":%d,"nbf":%d,"jti":"j","iss":"i","aud":["a","b"]`, now.Unix(), now.Unix()))},
		{hs256, claims(`,"role":"owner"`)},
		{hs256, claims(`,"Role":"owner"`)},
		{hs256, claims(`,"\u0072ole":"owner"`)},
		{hs256, claims(`,"\u017fub":"` + uuid.NewString() + `"`)},
		{hs256, claims(`,"EXP":1`)},
		{hs256, claims(`,"x":{"role":"owner","role":"admin"}`)},
		{hs256, claims(fmt.Sprintf(`,"nbf":%d`, now.Add(time.Hour).Unix()))},
		{hs256, claims(`,"exp":1e300`)},
		{hs256, []byte(`{"sub":"00000000-0000-0000-0000-000000000000"}`)},
		{hs256, []byte(`[]`)},
		{[]byte(`{"alg":"none"}`), claims("")},
		{[]byte(`{"alg":"HS512"}`), claims("")},
		{[]byte(`{"alg":"HS256","alg":"none"}`), claims("")},
	} {
		f.Add(seed.header, seed.payload)
	}
	f.Fuzz(func(t *testing.T, header, payload []byte) {
		v := newTokenVerifier(Config{JWTSecret: secret})
		enc := base64.RawURLEncoding
		signing := enc.EncodeToString(header) + "." + enc.EncodeToString(payload)
		sig, err := jwt.SigningMethodHS256.Sign(signing, secret)
		if err != nil {
			t.Fatal(err)
		}
		token := "Bearer " + signing + "." + enc.EncodeToString(sig)
		actor, err := v.verify(token)
		again, errAgain := v.verify(token)
		if again != actor || (err == nil) != (errAgain == nil) {
			t.Fatalf("second verify = %+v, %v; first %+v, %v", again, errAgain, actor, err)
		}
		if err != nil {
			if domain.ErrorCode(err) != domain.EUNAUTHORIZED {
				t.Fatalf("verify(%q, %q) = %v, want a 401", header, payload, err)
			}
			return
		}
		names, ok := topLevelNames(payload)
		if !ok {
			t.Fatalf("verify accepted payload %q, which is not a JSON object", payload)
		}
		seen := make(map[string]bool)
		for _, name := range names {
			if seen[name] {
				t.Fatalf("verify accepted payload %q, which repeats %q", payload, name)
			}
			seen[name] = true
			for _, known := range knownClaims {
				if name != known && strings.EqualFold(name, known) {
					t.Fatalf("verify accepted payload %q, which spells %q as %q", payload, known, name)
				}
			}
		}
		// Read the claims by their exact names, as the token's reader does.
		var members map[string]json.RawMessage
		if err := json.Unmarshal(payload, &members); err != nil {
			t.Fatalf("verify accepted payload %q, which does not decode: %v", payload, err)
		}
		var want domain.Actor
		var exp float64
		for name, dst := range map[string]any{"sub": &want.UserID, "account_id": &want.AccountID, "team_id": &want.TeamID, "role": &want.Role, "exp": &exp} {
			if err := json.Unmarshal(members[name], dst); err != nil {
				t.Fatalf("verify accepted payload %q, whose %s does not decode: %v", payload, name, err)
			}
		}
		if actor != want || actor.UserID == uuid.Nil || actor.AccountID == uuid.Nil || actor.TeamID == uuid.Nil {
			t.Fatalf("verify(%q) = %+v, want %+v", payload, actor, want)
		}
		if at := time.Unix(int64(exp), 0); at.Before(now.Add(-time.Minute)) || at.After(time.Now().Add(DefaultJWTMaxTTL+clockSkew)) {
			t.Fatalf("verify accepted exp %v of payload %q", at, payload)
		}
	})
}

// topLevelNames lists the names of a JSON object's members in order,
// repeats included; ok is false when data is not one JSON object.
func topLevelNames(data []byte) (names []string, ok bool) {
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, false
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, false
		}
		name, _ := tok.(string)
		names = append(names, name)
		var value json.RawMessage
		if err := dec.Decode(&value); err != nil {
			return nil, false
		}
	}
	return names, true
}
