package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tokenhub/tokenhub"
	"github.com/tokenhub/tokenhub/client"
)

// MaxBodyBytes is the largest request body the server reads (1 MiB). A larger
// body is refused with 413 and code too_large.
const MaxBodyBytes = 1 << 20

// Shared header values. net/http only reads header slices, and Header.Add
// copies a slice whose capacity is full, so sharing them is safe and saves an
// allocation per response.
var (
	hdrJSON    = []string{"application/json"}
	hdrNoStore = []string{"no-store"}
	hdrNoSniff = []string{"nosniff"}
)

// writeError answers err as {"error":{"code","message"}} with the status of
// its code, marked with the code in the client.ErrorHeader header so that
// tokenhub's own errors are told from an upstream's on the proxy route. A
// needs_reauth error carries the connection's state as well, an
// unavailable one a Retry-After header. Anything that is not a
// *tokenhub.Error is logged with its detail and answered as "internal
// error", so no detail (and no secret) of an unexpected failure reaches the
// caller.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	code := tokenhub.ErrorCode(err)
	msg := tokenhub.ErrorMessage(err)
	if code == tokenhub.EINTERNAL {
		if ctxErr := r.Context().Err(); ctxErr != nil && errors.Is(err, ctxErr) {
			// The caller went away; nobody reads this answer.
			code, msg = tokenhub.EUNAVAILABLE, "request cancelled"
		} else {
			s.log.LogAttrs(r.Context(), slog.LevelError, "internal error",
				slog.String("method", r.Method), slog.String("route", routeOf(r)), slog.Any("err", err))
			msg = "internal error"
		}
	}
	var body client.ErrorBody
	body.Error.Code, body.Error.Message = code, msg
	markError(w, code)
	if code == tokenhub.ENEEDSREAUTH {
		body.Error.State = tokenhub.StateNeedsReauth
	}
	var te *tokenhub.Error
	if errors.As(err, &te) && te.RetryAfter > 0 {
		secs := int64((te.RetryAfter + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
	}
	// Errors are never cached: the next answer may well differ. This also
	// makes every error answer carry the same headers, wherever it comes
	// from (a 404 for a connection an app may not read must look exactly
	// like one for a missing connection).
	w.Header()["Cache-Control"] = hdrNoStore
	if code == tokenhub.EUNAUTHORIZED {
		w.Header().Set("WWW-Authenticate", `Bearer realm="tokenhub"`)
	}
	s.writeJSON(w, client.StatusCode(code), &body)
}

// markError sets client.ErrorHeader to code on an error answer about to be
// written. Every JSON error the server writes carries it.
func markError(w http.ResponseWriter, code string) {
	w.Header()[client.ErrorHeader] = []string{code}
}

// writeJSON answers v as JSON with the given status.
func (s *Server) writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Only a bug gets here: every answer is a plain struct.
		s.log.Error("encode answer", "err", err)
		b = []byte(`{"error":{"code":"internal","message":"internal error"}}`)
		status = http.StatusInternalServerError
		markError(w, tokenhub.EINTERNAL)
	}
	h := w.Header()
	h["Content-Type"] = hdrJSON
	h["X-Content-Type-Options"] = hdrNoSniff
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// decodeJSON reads r's body into v strictly: at most MaxBodyBytes (413
// otherwise), one JSON value with no unknown field and nothing after it. A
// bad body yields an EINVALID error whose message starts with the path of
// the bad field, such as "scopes[1]: expected string" or "login.url:
// unknown field".
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	if r.ContentLength > MaxBodyBytes {
		return tooLarge()
	}
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return tooLarge()
	} else if err != nil {
		return tokenhub.Errorf(tokenhub.EINVALID, "body: cannot be read: %v", err)
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		return tokenhub.Errorf(tokenhub.EINVALID, "body: required, a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) || errors.Is(err, io.ErrUnexpectedEOF) {
			return tokenhub.Errorf(tokenhub.EINVALID, "body: not valid JSON (%s)", jsonErrText(err))
		}
		// The decoder does not say which field a custom unmarshaller or an
		// unknown field sits at; find it.
		if path, msg := locate(reflect.TypeOf(v).Elem(), raw, ""); path != "" || msg != "" {
			if path == "" {
				path = "body"
			}
			return tokenhub.Errorf(tokenhub.EINVALID, "%s: %s", path, msg)
		}
		return tokenhub.Errorf(tokenhub.EINVALID, "body: %s", jsonErrText(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return tokenhub.Errorf(tokenhub.EINVALID, "body: unexpected data after the JSON value")
	}
	return nil
}

func tooLarge() error {
	return tokenhub.Errorf(tokenhub.ETOOLARGE, "body: larger than %d bytes", MaxBodyBytes)
}

func jsonErrText(err error) string {
	return strings.TrimPrefix(err.Error(), "json: ")
}

// locate finds the first value in raw that cannot be decoded into a value of
// type t, and returns its dotted path (as JSON names, with [i] for array
// elements) and what is wrong with it. It mirrors encoding/json: fields match
// their JSON names exactly or else case-insensitively, embedded structs are
// flattened, and a type with its own UnmarshalJSON or UnmarshalText is a
// leaf. It returns "", "" when raw decodes.
func locate(t reflect.Type, raw json.RawMessage, path string) (string, string) {
	if bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return "", ""
	}
	pt := reflect.PointerTo(t)
	if pt.Implements(unmarshalerType) || pt.Implements(textUnmarshalerType) || t.Kind() == reflect.Interface {
		return leaf(t, raw, path)
	}
	switch t.Kind() {
	case reflect.Pointer:
		return locate(t.Elem(), raw, path)
	case reflect.Struct:
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(raw, &obj); err != nil {
			return pathOr(path), "expected an object"
		}
		fields := jsonFields(t)
		keys := make([]string, 0, len(obj))
		for k := range obj {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			f, ok := fields[k]
			if !ok {
				for name, ff := range fields {
					if strings.EqualFold(name, k) {
						f, ok = ff, true
						break
					}
				}
			}
			if !ok {
				return join(path, k), "unknown field"
			}
			if p, msg := locate(f.Type, obj[k], join(path, k)); msg != "" {
				return p, msg
			}
		}
		return "", ""
	case reflect.Slice, reflect.Array:
		var arr []json.RawMessage
		if err := json.Unmarshal(raw, &arr); err != nil {
			return pathOr(path), "expected an array"
		}
		for i, x := range arr {
			if p, msg := locate(t.Elem(), x, path+"["+strconv.Itoa(i)+"]"); msg != "" {
				return p, msg
			}
		}
		return "", ""
	case reflect.Map:
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(raw, &obj); err != nil {
			return pathOr(path), "expected an object"
		}
		keys := make([]string, 0, len(obj))
		for k := range obj {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			if p, msg := locate(t.Elem(), obj[k], join(path, k)); msg != "" {
				return p, msg
			}
		}
		return "", ""
	}
	return leaf(t, raw, path)
}

// leaf decodes raw into a new value of type t and describes the failure.
func leaf(t reflect.Type, raw json.RawMessage, path string) (string, string) {
	err := json.Unmarshal(raw, reflect.New(t).Interface())
	if err == nil {
		return "", ""
	}
	var ute *json.UnmarshalTypeError
	if errors.As(err, &ute) {
		return pathOr(path), fmt.Sprintf("expected %s, not %s", kindName(t), ute.Value)
	}
	return pathOr(path), jsonErrText(err)
}

func kindName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	}
	return t.String()
}

var (
	unmarshalerType     = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshalerType = reflect.TypeFor[interface{ UnmarshalText([]byte) error }]()
)

// jsonFields returns t's fields by JSON name, with embedded structs flattened
// as encoding/json does (an outer field wins over an embedded one).
func jsonFields(t reflect.Type) map[string]reflect.StructField {
	out := map[string]reflect.StructField{}
	var embedded []reflect.StructField
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				embedded = append(embedded, f)
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f
	}
	for _, e := range embedded {
		ft := e.Type
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		for name, f := range jsonFields(ft) {
			if _, ok := out[name]; !ok {
				out[name] = f
			}
		}
	}
	return out
}

func join(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

func pathOr(path string) string {
	if path == "" {
		return "body"
	}
	return path
}
