// web.go: web functions: the HTTP request from the context's event, the function-URL response built and encoded.
package squall

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"
)

// WebRequest is the HTTP request a web function serves.
type WebRequest struct {
	Method string `json:"method"`
	// Path is below /function/{name}, as sent ("/" at the root).
	Path     string `json:"path"`
	RawQuery string `json:"raw_query"`
	// Query holds the decoded parameters; repeated ones are joined with ",".
	Query map[string]string `json:"query"`
	// Headers by lowercase name; repeated ones are joined with ",".
	Headers    map[string]string `json:"headers"`
	RemoteAddr string            `json:"remote_addr"`
	Body       []byte            `json:"-"`
}

// Header is the request header `name` (any case), or "".
func (r *WebRequest) Header(name string) string { return r.Headers[strings.ToLower(name)] }

// JSON decodes the body into `into`.
func (r *WebRequest) JSON(into any) error {
	if err := json.Unmarshal(r.Body, into); err != nil {
		return fmt.Errorf("the request body is not JSON for %T: %w", into, err)
	}
	return nil
}

// WebResponse is a web function's answer: Lambda's function-URL response.
type WebResponse struct {
	Status  int
	Headers map[string]string
	Cookies []string
	Body    []byte
}

// Text answers `status` with a text/plain body.
func Text(status int, body string) *WebResponse {
	return &WebResponse{Status: status, Headers: map[string]string{"content-type": "text/plain; charset=utf-8"}, Body: []byte(body)}
}

// JSONResponse answers `status` with `value` encoded as JSON.
func JSONResponse(status int, value any) (*WebResponse, error) {
	body, err := json.Marshal(value)
	if err != nil {
		return nil, fmt.Errorf("the response cannot be encoded as JSON: %w", err)
	}
	return &WebResponse{Status: status, Headers: map[string]string{"content-type": "application/json"}, Body: body}, nil
}

// WithHeader sets a response header.
func (w *WebResponse) WithHeader(name, value string) *WebResponse {
	if w.Headers == nil {
		w.Headers = map[string]string{}
	}
	w.Headers[strings.ToLower(name)] = value
	return w
}

// WithCookie adds one Set-Cookie value.
func (w *WebResponse) WithCookie(cookie string) *WebResponse {
	w.Cookies = append(w.Cookies, cookie)
	return w
}

// envelope is the response as the platform reads it.
func (w *WebResponse) envelope() ([]byte, error) {
	status := w.Status
	if status == 0 {
		status = 200
	}
	envelope := map[string]any{"statusCode": status}
	if len(w.Headers) > 0 {
		envelope["headers"] = w.Headers
	}
	if len(w.Cookies) > 0 {
		envelope["cookies"] = w.Cookies
	}
	if utf8.Valid(w.Body) {
		envelope["body"] = string(w.Body)
	} else {
		envelope["body"] = base64.StdEncoding.EncodeToString(w.Body)
		envelope["isBase64Encoded"] = true
	}
	return json.Marshal(envelope)
}

// HandleWeb registers a web function's handler (a spec with [function.web]).
func HandleWeb(handler func(ctx *Context, request *WebRequest) (*WebResponse, error)) {
	Handle(func(ctx *Context, body []byte) ([]byte, error) {
		request := &WebRequest{Method: "POST", Path: "/"}
		if event := ctx.TriggerJSON(); len(event) > 0 {
			if err := json.Unmarshal(event, request); err != nil {
				return nil, fmt.Errorf("the request is malformed: %w", err)
			}
		}
		request.Body = body
		response, err := handler(ctx, request)
		if err != nil {
			return nil, err
		}
		if response == nil {
			response = &WebResponse{Status: 204}
		}
		return response.envelope()
	})
}
