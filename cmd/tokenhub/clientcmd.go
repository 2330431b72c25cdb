package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tokenhub/tokenhub"
	"github.com/tokenhub/tokenhub/client"
)

// DefaultURL is where client commands look for the server when neither --url
// nor TOKENHUB_URL says otherwise: the default address of `tokenhub serve`.
const DefaultURL = "http://127.0.0.1:7470"

// clientFlags are the flags every client command shares: where the server is
// and, for admin commands, where the admin key is kept when
// TOKENHUB_ADMIN_KEY is not set.
type clientFlags struct {
	URL          string
	AdminKeyFile string
	Timeout      time.Duration
}

func (c *clientFlags) bind(f *flags, admin bool) {
	f.String(&c.URL, "url", "TOKENHUB_URL", DefaultURL, "`URL` of the tokenhub server")
	if admin {
		f.String(&c.AdminKeyFile, "admin-key-file", "TOKENHUB_ADMIN_KEY_FILE", "./tokenhub.admin-key",
			"`file` holding the admin key, read when TOKENHUB_ADMIN_KEY is not set")
	}
	f.Duration(&c.Timeout, "timeout", "TOKENHUB_TIMEOUT", time.Minute, "how long one request to the server may take")
}

// Validate checks the flags and names the bad one.
func (c *clientFlags) Validate() error {
	u, err := url.Parse(c.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return flagErrorf("url", "%q is not an http or https URL such as %s", c.URL, DefaultURL)
	}
	if c.Timeout <= 0 {
		return flagErrorf("timeout", "must be positive")
	}
	return nil
}

func (c *clientFlags) client(key string) *client.Client {
	return client.New(c.URL, key,
		client.WithHTTPClient(&http.Client{Timeout: c.Timeout}),
		client.WithUserAgent("tokenhub-cli"))
}

// admin returns a client that uses the admin key: TOKENHUB_ADMIN_KEY, or the
// contents of --admin-key-file.
func (c *clientFlags) admin(e *Env) (*client.Client, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if k := e.Getenv("TOKENHUB_ADMIN_KEY"); k != "" {
		return c.client(k), nil
	}
	key, err := readKeyFile(c.AdminKeyFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no admin key: set TOKENHUB_ADMIN_KEY, or run where %s is "+
			"(tokenhub serve writes it on its first start), or point --admin-key-file at it", c.AdminKeyFile)
	} else if err != nil {
		return nil, fmt.Errorf("--admin-key-file: %w", err)
	}
	return c.client(key), nil
}

// app returns a client that uses the app key in TOKENHUB_APP_KEY.
func (c *clientFlags) app(e *Env) (*client.Client, error) {
	k, err := c.appKey(e)
	if err != nil {
		return nil, err
	}
	return c.client(k), nil
}

// appKey validates the flags and returns the app key in TOKENHUB_APP_KEY,
// for a command (curl) that builds its client with a transport of its own.
// The key must never reach an error message or the command's output.
func (c *clientFlags) appKey(e *Env) (string, error) {
	if err := c.Validate(); err != nil {
		return "", err
	}
	k := e.Getenv("TOKENHUB_APP_KEY")
	if k == "" {
		return "", errors.New("no app key: set TOKENHUB_APP_KEY to the key that 'tokenhub app create' printed")
	}
	return k, nil
}

// errText is how the CLI shows an error: the server's message and code for
// an API error, a hint when the server cannot be reached.
func errText(err error) string {
	var ce *client.Error
	if errors.As(err, &ce) {
		msg := ce.Message
		if msg == "" {
			msg = http.StatusText(ce.Status)
		}
		s := fmt.Sprintf("%s (%s)", msg, ce.Code)
		switch ce.Code {
		case tokenhub.EUNAUTHORIZED:
			s += "; check the key: TOKENHUB_ADMIN_KEY or the admin key file for admin commands, TOKENHUB_APP_KEY for app commands"
		case tokenhub.EUNAVAILABLE:
			if ce.RetryAfter > 0 {
				s += fmt.Sprintf("; retry in %s", human(ce.RetryAfter))
			}
		}
		// Keep any context the command added before the API error.
		if full := err.Error(); strings.HasSuffix(full, ce.Error()) && len(full) > len(ce.Error()) {
			s = strings.TrimSuffix(full, ce.Error()) + s
		}
		return s
	}
	var ue *url.Error
	var ne net.Error
	if errors.As(err, &ue) && errors.As(err, &ne) {
		u, _ := url.Parse(ue.URL)
		where := ue.URL
		if u != nil {
			where = u.Scheme + "://" + u.Host
		}
		if ne.Timeout() {
			return fmt.Sprintf("tokenhub at %s did not answer in time (--timeout)", where)
		}
		return fmt.Sprintf("cannot reach tokenhub at %s: is 'tokenhub serve' running there? (set --url or TOKENHUB_URL)", where)
	}
	return err.Error()
}

// human writes a duration the way a person reads it: 42s, 3m10s, 2h5m, 3d4h.
func human(d time.Duration) string {
	if d < 0 {
		d = -d
	}
	d = d.Round(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		m, s := int(d/time.Minute), int((d%time.Minute)/time.Second)
		if s == 0 {
			return fmt.Sprintf("%dm", m)
		}
		return fmt.Sprintf("%dm%ds", m, s)
	case d < 24*time.Hour:
		h, m := int(d/time.Hour), int((d%time.Hour)/time.Minute)
		if m == 0 {
			return fmt.Sprintf("%dh", h)
		}
		return fmt.Sprintf("%dh%dm", h, m)
	}
	days, h := int(d/(24*time.Hour)), int((d%(24*time.Hour))/time.Hour)
	if h == 0 {
		return fmt.Sprintf("%dd", days)
	}
	return fmt.Sprintf("%dd%dh", days, h)
}

// expiresIn is the "expires in" column of a connection.
func expiresIn(c *client.ConnectionView, now time.Time) string {
	switch {
	case !c.HasToken:
		return "-"
	case c.ExpiresAt.IsZero():
		return "never"
	case !c.ExpiresAt.After(now):
		return "expired"
	}
	return human(c.ExpiresAt.Sub(now))
}

// nextRefresh is the "next refresh" column of a connection.
func nextRefresh(c *client.ConnectionView, now time.Time) string {
	switch {
	case c.NextRefreshAt.IsZero():
		return "-"
	case !c.NextRefreshAt.After(now):
		return "due"
	}
	return "in " + human(c.NextRefreshAt.Sub(now))
}

// lastError is the "last error" column: what failed, on one line.
func lastError(c *client.ConnectionView) string {
	e := c.LastError
	if e == nil {
		return ""
	}
	s := e.Message
	if e.Code != "" && !strings.Contains(s, e.Code) {
		s += " [" + e.Code
		if e.Description != "" {
			s += ": " + e.Description
		}
		s += "]"
	}
	return oneLine(s)
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// table aligns columns like tabwriter and trims the padding that would
// otherwise trail each line when its last cells are empty.
type table struct {
	buf bytes.Buffer
	tw  *tabwriter.Writer
	out io.Writer
}

func newTable(e *Env) *table {
	t := &table{out: e.Stdout}
	t.tw = tabwriter.NewWriter(&t.buf, 0, 0, 2, ' ', 0)
	return t
}

func (t *table) Write(p []byte) (int, error) { return t.tw.Write(p) }

// Flush writes the aligned table.
func (t *table) Flush() error {
	if err := t.tw.Flush(); err != nil {
		return err
	}
	for _, line := range strings.SplitAfter(t.buf.String(), "\n") {
		if line == "" {
			continue
		}
		if _, err := io.WriteString(t.out, strings.TrimRight(line, " \n")+"\n"); err != nil {
			return err
		}
	}
	t.buf.Reset()
	return nil
}

// connectionTable writes the status table of conns.
func connectionTable(e *Env, conns []*client.ConnectionView, now time.Time) error {
	tw := newTable(e)
	fmt.Fprintln(tw, "WORKSPACE\tCONNECTION\tSTATE\tEXPIRES IN\tNEXT REFRESH\tREFRESHES\tLAST ERROR")
	for _, c := range conns {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", c.Workspace, c.Name, c.State,
			expiresIn(c, now), nextRefresh(c, now), c.RefreshCount, lastError(c))
	}
	return tw.Flush()
}

// workspaceNames returns ws when it is set, or else every workspace.
func workspaceNames(ctx context.Context, c *client.Client, ws string) ([]string, error) {
	if ws != "" {
		return []string{ws}, nil
	}
	list, err := c.Workspaces(ctx)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(list))
	for i, w := range list {
		names[i] = w.Name
	}
	return names, nil
}

// fromWorkspaces returns what list (the client's Apps or Connections)
// returns for workspace ws or, when ws is "", for every workspace in turn,
// in workspace order. It stops at the first failure.
func fromWorkspaces[T any](ctx context.Context, c *client.Client, ws string, list func(context.Context, string) ([]T, error)) ([]T, error) {
	names, err := workspaceNames(ctx, c, ws)
	if err != nil {
		return nil, err
	}
	var all []T
	for _, w := range names {
		items, err := list(ctx, w)
		if err != nil {
			return nil, err
		}
		all = append(all, items...)
	}
	return all, nil
}

// findWorkspace returns the workspace that holds connection conn when
// --workspace was not given: the only one that has a connection by that name.
func findWorkspace(ctx context.Context, c *client.Client, ws, conn string) (string, error) {
	if ws != "" {
		return ws, nil
	}
	names, err := workspaceNames(ctx, c, "")
	if err != nil {
		return "", err
	}
	var found []string
	for _, w := range names {
		if _, err := c.Connection(ctx, w, conn); err == nil {
			found = append(found, w)
		} else if !errors.Is(err, client.ErrNotFound) {
			return "", err
		}
	}
	switch len(found) {
	case 0:
		return "", fmt.Errorf("no workspace has a connection named %q", conn)
	case 1:
		return found[0], nil
	}
	sort.Strings(found)
	return "", usagef("connection %q exists in workspaces %s; choose one with --workspace", conn, strings.Join(found, ", "))
}

func needArgs(args []string, n int, what string) error {
	if len(args) < n {
		return usagef("missing %s", what)
	}
	if len(args) > n {
		return usagef("unexpected arguments %q", args[n:])
	}
	return nil
}

func workspaceCommand() *Command {
	return &Command{
		Name:    "workspace",
		Summary: "Manage workspaces",
		Help:    "A workspace holds connections and the apps that may read them.",
		Sub: []*Command{{
			Name:    "create",
			Args:    "[flags] NAME",
			Summary: "Create a workspace",
			Help:    "Creates a workspace. Names are 1-63 of a-z 0-9 . _ -, starting with a letter or digit.",
			Example: "tokenhub workspace create acme",
			New: func(f *flags) func(context.Context, *Env, []string) error {
				var cf clientFlags
				cf.bind(f, true)
				return func(ctx context.Context, e *Env, args []string) error {
					if err := needArgs(args, 1, "the workspace NAME"); err != nil {
						return err
					}
					c, err := cf.admin(e)
					if err != nil {
						return err
					}
					w, err := c.CreateWorkspace(ctx, args[0])
					if err != nil {
						return err
					}
					fmt.Fprintf(e.Stdout, "created workspace %s\n", w.Name)
					return nil
				}
			},
		}, {
			Name:    "list",
			Args:    "[flags]",
			Summary: "List workspaces",
			Example: "tokenhub workspace list",
			New: func(f *flags) func(context.Context, *Env, []string) error {
				var cf clientFlags
				cf.bind(f, true)
				return func(ctx context.Context, e *Env, args []string) error {
					if err := needArgs(args, 0, ""); err != nil {
						return err
					}
					c, err := cf.admin(e)
					if err != nil {
						return err
					}
					list, err := c.Workspaces(ctx)
					if err != nil {
						return err
					}
					tw := newTable(e)
					fmt.Fprintln(tw, "WORKSPACE\tCREATED")
					for _, w := range list {
						fmt.Fprintf(tw, "%s\t%s\n", w.Name, w.CreatedAt.Local().Format(time.DateTime))
					}
					return tw.Flush()
				}
			},
		}, {
			Name:    "delete",
			Args:    "[flags] NAME",
			Summary: "Delete a workspace with its connections and apps",
			Help: "Deletes a workspace with its connections, their tokens and events, and its apps.\n" +
				"The apps' keys stop working at once.",
			Example: "tokenhub workspace delete acme",
			New: func(f *flags) func(context.Context, *Env, []string) error {
				var cf clientFlags
				cf.bind(f, true)
				return func(ctx context.Context, e *Env, args []string) error {
					if err := needArgs(args, 1, "the workspace NAME"); err != nil {
						return err
					}
					c, err := cf.admin(e)
					if err != nil {
						return err
					}
					if err := c.DeleteWorkspace(ctx, args[0]); err != nil {
						return err
					}
					fmt.Fprintf(e.Stdout, "deleted workspace %s\n", args[0])
					return nil
				}
			},
		}},
	}
}

func appCommand() *Command {
	return &Command{
		Name:    "app",
		Summary: "Manage apps and their keys",
		Help: "An app reads the connections of its workspace with its app key. The key is\n" +
			"shown once, when the app is created; tokenhub keeps only its hash.",
		Sub: []*Command{{
			Name:    "create",
			Args:    "--workspace W [--connections a,b] [--quiet] NAME",
			Summary: "Create an app and print its key",
			Help: `Creates an app in a workspace and prints its key. The key is shown only this
once: keep it where the app reads it, for example in TOKENHUB_APP_KEY. With
--connections the app may read only the connections named; otherwise it may
read every connection of its workspace. --quiet prints the key alone.`,
			Example: `tokenhub app create --workspace acme --connections baserow reports-page
export TOKENHUB_APP_KEY=$(tokenhub app create --workspace acme --quiet worker)`,
			New: func(f *flags) func(context.Context, *Env, []string) error {
				var cf clientFlags
				var ws, conns string
				var quiet bool
				cf.bind(f, true)
				f.String(&ws, "workspace", "TOKENHUB_WORKSPACE", "", "the app's `workspace`; required")
				f.String(&conns, "connections", "", "", "comma-separated `names` of the only connections the app may read")
				f.Bool(&quiet, "quiet", false, "print only the key")
				return func(ctx context.Context, e *Env, args []string) error {
					if err := needArgs(args, 1, "the app NAME"); err != nil {
						return err
					}
					if ws == "" {
						return flagErrorf("workspace", "required")
					}
					var list []string
					for _, s := range strings.Split(conns, ",") {
						if s = strings.TrimSpace(s); s != "" {
							list = append(list, s)
						}
					}
					c, err := cf.admin(e)
					if err != nil {
						return err
					}
					k, err := c.CreateApp(ctx, ws, args[0], list)
					if err != nil {
						return err
					}
					if quiet {
						fmt.Fprintln(e.Stdout, k.Key)
						return nil
					}
					scope := "every connection of the workspace"
					if len(list) > 0 {
						scope = "connections " + strings.Join(list, ", ")
					}
					fmt.Fprintf(e.Stdout, "created app %s in workspace %s; it may read %s.\n", k.Name, k.Workspace, scope)
					fmt.Fprintf(e.Stdout, "Its key, shown only this once:\n\n  %s\n\n", k.Key)
					fmt.Fprintf(e.Stdout, "For example: export TOKENHUB_APP_KEY=%s\n", k.Key)
					return nil
				}
			},
		}, {
			Name:    "list",
			Args:    "[--workspace W]",
			Summary: "List apps",
			Help:    "Lists the apps of one workspace, or of every workspace. Keys are never shown.",
			Example: "tokenhub app list --workspace acme",
			New: func(f *flags) func(context.Context, *Env, []string) error {
				var cf clientFlags
				var ws string
				cf.bind(f, true)
				f.String(&ws, "workspace", "TOKENHUB_WORKSPACE", "", "list only this `workspace`'s apps")
				return func(ctx context.Context, e *Env, args []string) error {
					if err := needArgs(args, 0, ""); err != nil {
						return err
					}
					c, err := cf.admin(e)
					if err != nil {
						return err
					}
					apps, err := fromWorkspaces(ctx, c, ws, c.Apps)
					if err != nil {
						return err
					}
					tw := newTable(e)
					fmt.Fprintln(tw, "WORKSPACE\tAPP\tCONNECTIONS\tCREATED")
					for _, a := range apps {
						conns := "(all)"
						if len(a.Connections) > 0 {
							conns = strings.Join(a.Connections, ",")
						}
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", a.Workspace, a.Name, conns, a.CreatedAt.Local().Format(time.DateTime))
					}
					return tw.Flush()
				}
			},
		}, {
			Name:    "revoke",
			Args:    "--workspace W NAME",
			Summary: "Revoke an app's key",
			Help:    "Deletes an app. Its key stops working at once.",
			Example: "tokenhub app revoke --workspace acme reports-page",
			New: func(f *flags) func(context.Context, *Env, []string) error {
				var cf clientFlags
				var ws string
				cf.bind(f, true)
				f.String(&ws, "workspace", "TOKENHUB_WORKSPACE", "", "the app's `workspace`; required")
				return func(ctx context.Context, e *Env, args []string) error {
					if err := needArgs(args, 1, "the app NAME"); err != nil {
						return err
					}
					if ws == "" {
						return flagErrorf("workspace", "required")
					}
					c, err := cf.admin(e)
					if err != nil {
						return err
					}
					if err := c.RevokeApp(ctx, ws, args[0]); err != nil {
						return err
					}
					fmt.Fprintf(e.Stdout, "revoked app %s in workspace %s\n", args[0], ws)
					return nil
				}
			},
		}},
	}
}

func tokenCommand() *Command {
	return &Command{
		Name:    "token",
		Args:    "[--header] CONN",
		Summary: "Print a connection's access token",
		Help: `Prints a valid access token of the connection, using the app key in
TOKENHUB_APP_KEY. With --header it prints the whole header the provider expects,
such as "Authorization: JWT eyJ…", ready for curl -H.`,
		Example: `curl -H "$(tokenhub token --header baserow)" https://api.baserow.io/api/database/rows/table/1/
curl -H "Authorization: JWT $(tokenhub token baserow)" https://api.baserow.io/api/database/rows/table/1/`,
		New: func(f *flags) func(context.Context, *Env, []string) error {
			var cf clientFlags
			var header bool
			cf.bind(f, false)
			f.Bool(&header, "header", false, "print the header (name: value) instead of the bare token")
			return func(ctx context.Context, e *Env, args []string) error {
				if err := needArgs(args, 1, "the connection name CONN"); err != nil {
					return err
				}
				c, err := cf.app(e)
				if err != nil {
					return err
				}
				t, err := c.Token(ctx, args[0])
				if err != nil {
					return err
				}
				if header {
					fmt.Fprintf(e.Stdout, "%s: %s\n", t.Header.Name, t.Header.Value)
				} else {
					fmt.Fprintln(e.Stdout, t.AccessToken)
				}
				return nil
			}
		},
	}
}

func refreshCommand() *Command {
	return &Command{
		Name:    "refresh",
		Args:    "[--workspace W] CONN",
		Summary: "Renew a connection's token now",
		Help: `Makes the connection renew its token now, joining any refresh already running,
and prints when the new token expires. Without --workspace it uses the app key
in TOKENHUB_APP_KEY; with --workspace it uses the admin key.`,
		Example: `tokenhub refresh baserow
tokenhub refresh --workspace acme baserow`,
		New: func(f *flags) func(context.Context, *Env, []string) error {
			var cf clientFlags
			var ws string
			cf.bind(f, true)
			f.String(&ws, "workspace", "", "", "refresh in this `workspace` with the admin key")
			return func(ctx context.Context, e *Env, args []string) error {
				if err := needArgs(args, 1, "the connection name CONN"); err != nil {
					return err
				}
				now := time.Now()
				if ws == "" {
					c, err := cf.app(e)
					if err != nil {
						return fmt.Errorf("%w (or give --workspace to use the admin key)", err)
					}
					t, err := c.Refresh(ctx, args[0])
					if err != nil {
						return err
					}
					exp := "never expires"
					if !t.ExpiresAt.IsZero() {
						exp = "expires in " + human(t.ExpiresAt.Sub(now))
					}
					fmt.Fprintf(e.Stdout, "refreshed %s: the new token %s\n", args[0], exp)
					return nil
				}
				c, err := cf.admin(e)
				if err != nil {
					return err
				}
				v, err := c.RefreshConnection(ctx, ws, args[0])
				if err != nil {
					return err
				}
				fmt.Fprintf(e.Stdout, "refreshed %s/%s: %s, expires in %s, next refresh %s\n",
					ws, args[0], v.State, expiresIn(v, now), nextRefresh(v, now))
				return nil
			}
		},
	}
}

func statusCommand() *Command {
	return &Command{
		Name:    "status",
		Args:    "[--workspace W]",
		Summary: "Show every connection's state, expiry and next refresh",
		Help: `Shows a table of every connection (of one workspace with --workspace): its
state (pending, healthy, degraded or needs_reauth), when its token expires, when
it will next be refreshed, how many times it was obtained or refreshed, and its
last error.`,
		Example: "tokenhub status\ntokenhub status --workspace acme",
		New: func(f *flags) func(context.Context, *Env, []string) error {
			var cf clientFlags
			var ws string
			cf.bind(f, true)
			f.String(&ws, "workspace", "TOKENHUB_WORKSPACE", "", "show only this `workspace`")
			return func(ctx context.Context, e *Env, args []string) error {
				if err := needArgs(args, 0, ""); err != nil {
					return err
				}
				c, err := cf.admin(e)
				if err != nil {
					return err
				}
				all, err := fromWorkspaces(ctx, c, ws, c.Connections)
				if err != nil {
					return err
				}
				if len(all) == 0 {
					fmt.Fprintln(e.Stdout, "no connections")
					return nil
				}
				return connectionTable(e, all, time.Now())
			}
		},
	}
}

func eventsCommand() *Command {
	return &Command{
		Name:    "events",
		Args:    "[--workspace W] [--limit N] CONN",
		Summary: "Show a connection's recent events",
		Help: `Shows a connection's recent events, oldest first: tokens obtained and refreshed,
retries, failures and recoveries. Without --workspace, the workspace is the one
that has a connection by that name.`,
		Example: "tokenhub events baserow\ntokenhub events --workspace acme --limit 10 baserow",
		New: func(f *flags) func(context.Context, *Env, []string) error {
			var cf clientFlags
			var ws string
			var limit int
			cf.bind(f, true)
			f.String(&ws, "workspace", "TOKENHUB_WORKSPACE", "", "the connection's `workspace`")
			f.Int(&limit, "limit", 50, "show at most this many of the latest events")
			return func(ctx context.Context, e *Env, args []string) error {
				if err := needArgs(args, 1, "the connection name CONN"); err != nil {
					return err
				}
				if limit <= 0 {
					return flagErrorf("limit", "must be positive")
				}
				c, err := cf.admin(e)
				if err != nil {
					return err
				}
				w, err := findWorkspace(ctx, c, ws, args[0])
				if err != nil {
					return err
				}
				evs, err := c.Events(ctx, w, args[0], limit)
				if err != nil {
					return err
				}
				tw := newTable(e)
				fmt.Fprintln(tw, "TIME\tEVENT\tMESSAGE")
				for i := len(evs) - 1; i >= 0; i-- {
					ev := evs[i]
					fmt.Fprintf(tw, "%s\t%s\t%s\n", ev.At.Local().Format(time.DateTime), ev.Type, oneLine(ev.Message))
				}
				return tw.Flush()
			}
		},
	}
}
