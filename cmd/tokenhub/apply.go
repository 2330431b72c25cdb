package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/tokenhub/tokenhub"
	"github.com/tokenhub/tokenhub/client"
	"github.com/tokenhub/tokenhub/internal/config"
)

func applyCommand() *Command {
	return &Command{
		Name:    "apply",
		Args:    "-f FILE [--dry-run] [--wait 10s]",
		Summary: "Make the server match a config file",
		Help: `Creates or updates the providers, workspaces and connections in FILE so that the
server matches it. Nothing that is not in the file is deleted. Applying the same
file twice changes nothing, and the second run says so.

Secrets are written in the file as ${env:NAME} or ${file:PATH} (relative to the
file) and resolved here, at apply time. An error names the file, the line and
the field.

After the changes, apply waits up to --wait for each new or changed connection's
first token, then prints the state of every connection in the file, so a wrong
password shows at once. It exits with status 1 when a connection needs
re-authorisation or anything failed.

--dry-run prints what would change and changes nothing. The server never shows
secrets, so it cannot compare them: a connection whose other fields match is
reported as "unchanged unless its secrets changed" when it has secrets.`,
		Example: `REPORTS_SECRET=... BASEROW_PASSWORD=... tokenhub apply -f tokenhub.yaml
tokenhub apply -f tokenhub.yaml --dry-run`,
		New: func(f *flags) func(context.Context, *Env, []string) error {
			var a applier
			a.cf.bind(f, true)
			f.String(&a.file, "f", "TOKENHUB_CONFIG", "", "the config `file` to apply (required)")
			f.Bool(&a.dry, "dry-run", false, "print what would change, change nothing")
			f.Duration(&a.wait, "wait", "", 10*time.Second, "how long to wait for new or changed connections' first tokens (0: do not wait)")
			return func(ctx context.Context, e *Env, args []string) error {
				if len(args) > 0 {
					return usagef("unexpected arguments %q (the file goes after -f)", args)
				}
				if a.file == "" {
					return flagErrorf("f", "required: the config file to apply")
				}
				if a.wait < 0 {
					return flagErrorf("wait", "must not be negative")
				}
				a.e = e
				return a.run(ctx)
			}
		},
	}
}

// applier runs one `tokenhub apply`.
type applier struct {
	cf   clientFlags
	file string
	dry  bool
	wait time.Duration

	e    *Env
	c    *client.Client
	plan *config.Plan

	created, updated, unchanged, maybe int
	failed                             bool
	changed                            []*config.Connection // new or changed connections, to wait for
	newWS                              map[string]bool      // workspaces that do not exist yet (dry run)
}

func (a *applier) run(ctx context.Context) error {
	c, err := a.cf.admin(a.e)
	if err != nil {
		return err
	}
	a.c = c

	// A connection may use a provider stored on the server; ask for it only
	// when the file and the built-ins lack it.
	var lookupErr error
	plan, err := config.Load(a.file, config.Options{
		LookupEnv: a.e.LookupEnv,
		FindProvider: func(name string) *tokenhub.Provider {
			pv, err := c.Provider(ctx, name)
			if err != nil {
				if !errors.Is(err, client.ErrNotFound) && lookupErr == nil {
					lookupErr = err
				}
				return nil
			}
			return &pv.Provider
		},
	})
	if lookupErr != nil {
		return fmt.Errorf("looking up providers on the server: %w", lookupErr)
	}
	if err != nil {
		var list config.ErrorList
		if errors.As(err, &list) {
			for _, e := range list {
				fmt.Fprintln(a.e.Stderr, e)
			}
			return errExit
		}
		return err
	}
	a.plan = plan
	for _, w := range plan.Warnings {
		fmt.Fprintf(a.e.Stderr, "warning: %s\n", w)
	}

	if err := a.providers(ctx); err != nil {
		return err
	}
	if err := a.workspaces(ctx); err != nil {
		return err
	}
	if err := a.connections(ctx); err != nil {
		return err
	}
	if a.dry {
		a.summary()
		if a.failed {
			return errExit
		}
		return nil
	}
	reauth, err := a.report(ctx)
	if err != nil {
		return err
	}
	a.summary()
	if a.failed || reauth {
		return errExit
	}
	return nil
}

// say prints what happened to one object, or what would happen to it in a
// dry run.
func (a *applier) say(kind, name string, result tokenhub.PutResult, detail string) {
	switch result {
	case tokenhub.PutCreated:
		a.created++
	case tokenhub.PutUpdated:
		a.updated++
	case tokenhub.PutUnchanged:
		a.unchanged++
		return
	default:
		a.maybe++
	}
	verb := string(result)
	if a.dry {
		switch result {
		case tokenhub.PutCreated:
			verb = "would be created"
		case tokenhub.PutUpdated:
			verb = "would be updated"
		}
	}
	if detail != "" {
		verb += " (" + detail + ")"
	}
	fmt.Fprintf(a.e.Stdout, "%s %s: %s\n", kind, name, verb)
}

// refused reports an error the server gave for the object at pos, placed at
// the line of the field the server's message names.
func (a *applier) refused(pos config.Pos, what string, err error) error {
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Code != tokenhub.EINVALID {
		return fmt.Errorf("%s: %s: %w", pos, what, err)
	}
	a.failed = true
	at := pos
	msg := ce.Message
	if f, rest, ok := strings.Cut(msg, ": "); ok && !strings.ContainsAny(f, " \t\"") {
		at = a.plan.Locate(pos.Field + "." + f)
		msg = rest
	}
	fmt.Fprintf(a.e.Stderr, "%s: %s: %s (refused by the server; %s was not changed)\n", at, at.Field, msg, what)
	return nil
}

func (a *applier) providers(ctx context.Context) error {
	for _, p := range a.plan.Providers {
		what := "provider " + p.Def.Name
		if a.dry {
			cur, err := a.c.Provider(ctx, p.Def.Name)
			switch {
			case errors.Is(err, client.ErrNotFound):
				a.say("provider", p.Def.Name, tokenhub.PutCreated, "")
			case err != nil:
				return fmt.Errorf("%s: reading %s: %w", p.Pos, what, err)
			case sameJSON(&cur.Provider, &p.Def):
				a.say("provider", p.Def.Name, tokenhub.PutUnchanged, "")
			default:
				a.say("provider", p.Def.Name, tokenhub.PutUpdated, "")
			}
			continue
		}
		def := p.Def
		_, res, err := a.c.PutProvider(ctx, &def)
		if err != nil {
			if err := a.refused(p.Pos, what, err); err != nil {
				return err
			}
			continue
		}
		a.say("provider", p.Def.Name, res, "")
	}
	return nil
}

func (a *applier) workspaces(ctx context.Context) error {
	list, err := a.c.Workspaces(ctx)
	if err != nil {
		return fmt.Errorf("listing workspaces: %w", err)
	}
	exists := map[string]bool{}
	for _, w := range list {
		exists[w.Name] = true
	}
	a.newWS = map[string]bool{}
	for _, w := range a.plan.Workspaces {
		if exists[w.Name] {
			a.say("workspace", w.Name, tokenhub.PutUnchanged, "")
			continue
		}
		a.newWS[w.Name] = true
		if a.dry {
			a.say("workspace", w.Name, tokenhub.PutCreated, "")
			continue
		}
		if _, err := a.c.CreateWorkspace(ctx, w.Name); errors.Is(err, client.ErrConflict) {
			a.say("workspace", w.Name, tokenhub.PutUnchanged, "") // created meanwhile by someone else
		} else if err != nil {
			if err := a.refused(w.Pos, "workspace "+w.Name, err); err != nil {
				return err
			}
		} else {
			a.say("workspace", w.Name, tokenhub.PutCreated, "")
		}
	}
	return nil
}

// mayChange is the dry-run verdict on a connection whose readable fields
// match but whose secrets the server cannot show.
const mayChange tokenhub.PutResult = "unchanged unless its secrets changed"

func (a *applier) connections(ctx context.Context) error {
	for _, w := range a.plan.Workspaces {
		for _, conn := range w.Connections {
			path := w.Name + "/" + conn.Name
			cfg := conn.Config
			if a.dry {
				if a.newWS[w.Name] {
					a.say("connection", path, tokenhub.PutCreated, "")
					continue
				}
				cur, err := a.c.Connection(ctx, w.Name, conn.Name)
				if errors.Is(err, client.ErrNotFound) {
					a.say("connection", path, tokenhub.PutCreated, "")
					continue
				} else if err != nil {
					return fmt.Errorf("%s: reading connection %s: %w", conn.Pos, path, err)
				}
				if diff := connectionDiff(cur, &cfg); len(diff) > 0 {
					a.say("connection", path, tokenhub.PutUpdated, strings.Join(diff, ", "))
				} else if len(cfg.SecretFields()) > 0 {
					a.say("connection", path, mayChange, "secrets cannot be read back to compare")
				} else {
					a.say("connection", path, tokenhub.PutUnchanged, "")
				}
				continue
			}
			_, res, err := a.c.PutConnection(ctx, w.Name, conn.Name, &cfg)
			if err != nil {
				if err := a.refused(conn.Pos, "connection "+path, err); err != nil {
					return err
				}
				continue
			}
			a.say("connection", path, res, "")
			if res != tokenhub.PutUnchanged {
				a.changed = append(a.changed, conn)
			}
		}
	}
	return nil
}

// connectionDiff names the fields the server shows that differ between the
// stored connection and cfg, including which secret fields are set.
func connectionDiff(cur *client.ConnectionView, cfg *tokenhub.ConnectionConfig) []string {
	var d []string
	add := func(name string, same bool) {
		if !same {
			d = append(d, name)
		}
	}
	add("provider", cur.Provider == cfg.Provider)
	add("base_url", cur.BaseURL == cfg.BaseURL)
	add("token_url", cur.TokenURL == cfg.TokenURL)
	add("grant", cur.Grant == cfg.Grant)
	add("auth_style", cur.AuthStyle == cfg.AuthStyle)
	add("client_id", cur.ClientID == cfg.ClientID)
	add("username", cur.Username == cfg.Username)
	add("scopes", slices.Equal(cur.Scopes, cfg.Scopes))
	add("params", maps.Equal(cur.Params, cfg.Params))
	add("allow", sameJSON(cur.Allow, cfg.Allow))
	add("secret fields set", slices.Equal(cur.SecretsSet, cfg.SecretFields()))
	return d
}

// sameJSON reports whether a and b encode to the same JSON, treating nil and
// empty alike: how the file and the server's answer are compared.
func sameJSON(a, b any) bool {
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	norm := func(b []byte) string {
		if s := string(b); s != "null" && s != "[]" && s != "{}" {
			return s
		}
		return ""
	}
	return err1 == nil && err2 == nil && norm(ja) == norm(jb)
}

// report waits for the changed connections' first tokens, prints the state
// of every connection in the file, and reports whether any needs
// re-authorisation.
func (a *applier) report(ctx context.Context) (reauth bool, err error) {
	if len(a.changed) > 0 && a.wait > 0 {
		fmt.Fprintf(a.e.Stdout, "waiting up to %s for first tokens...\n", a.wait)
		if err := a.waitTokens(ctx); err != nil {
			return false, err
		}
	}
	var views []*client.ConnectionView
	var broken []string
	for _, w := range a.plan.Workspaces {
		for _, conn := range w.Connections {
			v, err := a.c.Connection(ctx, w.Name, conn.Name)
			if errors.Is(err, client.ErrNotFound) {
				continue // refused above
			} else if err != nil {
				return false, fmt.Errorf("reading connection %s/%s: %w", w.Name, conn.Name, err)
			}
			views = append(views, v)
			if v.State == tokenhub.StateNeedsReauth {
				reauth = true
				broken = append(broken, fmt.Sprintf("%s: connection %s/%s needs re-authorisation: %s",
					conn.Pos, w.Name, conn.Name, lastError(v)))
			}
		}
	}
	if len(views) > 0 {
		if err := connectionTable(a.e, views, time.Now()); err != nil {
			return false, err
		}
	}
	for _, b := range broken {
		fmt.Fprintln(a.e.Stderr, b)
	}
	return reauth, nil
}

// waitTokens polls the changed connections until each holds a token or
// needs re-authorisation, or until --wait has passed.
func (a *applier) waitTokens(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, a.wait)
	defer cancel()
	pending := slices.Clone(a.changed)
	ws := map[*config.Connection]string{}
	for _, w := range a.plan.Workspaces {
		for _, c := range w.Connections {
			ws[c] = w.Name
		}
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for len(pending) > 0 {
		var still []*config.Connection
		for _, c := range pending {
			v, err := a.c.Connection(ctx, ws[c], c.Name)
			if ctx.Err() != nil {
				return nil // --wait has passed: report what there is
			}
			if err != nil {
				return fmt.Errorf("reading connection %s/%s: %w", ws[c], c.Name, err)
			}
			if v.State != tokenhub.StateHealthy && v.State != tokenhub.StateNeedsReauth {
				still = append(still, c)
			}
		}
		pending = still
		if len(pending) == 0 {
			break
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
	return nil
}

func (a *applier) summary() {
	if a.created+a.updated+a.maybe == 0 && !a.failed {
		if a.dry {
			fmt.Fprintf(a.e.Stdout, "dry run: no changes (%d unchanged)\n", a.unchanged)
		} else {
			fmt.Fprintf(a.e.Stdout, "apply: no changes (%d unchanged)\n", a.unchanged)
		}
		return
	}
	if a.dry {
		s := fmt.Sprintf("dry run: %d to create, %d to update, %d unchanged", a.created, a.updated, a.unchanged)
		if a.maybe > 0 {
			s += fmt.Sprintf(", %d unchanged unless their secrets changed", a.maybe)
		}
		fmt.Fprintln(a.e.Stdout, s+"; nothing was changed")
		return
	}
	s := fmt.Sprintf("apply: %d created, %d updated, %d unchanged", a.created, a.updated, a.unchanged)
	if a.failed {
		s += "; some changes were refused (see above)"
	}
	fmt.Fprintln(a.e.Stdout, s)
}
