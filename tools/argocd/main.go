// Command coalmine-argocd runs resource customizations (health checks and actions in Lua) and
// ignoreDifferences rules the way Argo CD does, so coalmine can test what it ships for Argo CD
// without running Argo CD. See luavm.go and diff.go for what is reproduced and from where.
//
// Usage:
//
//	coalmine-argocd test [--mode upstream|production|restricted] [--scripts PATH] DIR
//	    Run every health_test.yaml and action_test.yaml under DIR (Argo CD's
//	    resource_customizations layout); scripts come from DIR or from PATH (a tree or an
//	    argocd-cm manifest). Prints a JSON report; exits 1 when a test fails.
//	coalmine-argocd serve
//	    Answer JSON requests, one per line on stdin, one JSON answer per line on stdout:
//	    {"op": "health" | "discovery" | "action", "obj": {...}, "script": "..." or
//	     "source": PATH, "action": NAME, "params": {...}, "libraries": "open" | "restricted"}
//	    {"op": "normalize", "obj": {...}, "ignoreDifferences": [...],
//	     "ignoreResourceStatusField": "all" | "crd" | "none"}
//	    {"op": "diff" | "syncTarget", "config": {...}, "live": {...}, "ignoreDifferences": [...]}
//	    A failure answers {"error": "..."}.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	switch os.Args[1] {
	case "test":
		os.Exit(testCommand(os.Args[2:]))
	case "serve":
		if err := serve(os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "coalmine-argocd:", err)
			os.Exit(2)
		}
	default:
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: coalmine-argocd test [--mode M] [--scripts PATH] DIR | coalmine-argocd serve")
	os.Exit(2)
}

func testCommand(args []string) int {
	flags := flag.NewFlagSet("test", flag.ExitOnError)
	mode := flags.String("mode", string(ModeUpstream), "upstream, production or restricted")
	scripts := flags.String("scripts", "", "where the scripts are (a tree or an argocd-cm manifest); default DIR")
	_ = flags.Parse(args)
	if flags.NArg() != 1 {
		usage()
	}
	switch Mode(*mode) {
	case ModeUpstream, ModeProduction, ModeRestricted:
	default:
		fmt.Fprintf(os.Stderr, "coalmine-argocd: unknown mode %q\n", *mode)
		return 2
	}
	var source Source
	if *scripts != "" {
		var err error
		if source, err = OpenSource(*scripts); err != nil {
			fmt.Fprintln(os.Stderr, "coalmine-argocd:", err)
			return 2
		}
	}
	results, err := RunTests(flags.Arg(0), source, Mode(*mode))
	if err != nil {
		fmt.Fprintln(os.Stderr, "coalmine-argocd:", err)
		return 2
	}
	failed := 0
	for _, result := range results {
		if !result.Passed {
			failed++
		}
	}
	report := map[string]any{"results": results, "passed": len(results) - failed, "failed": failed}
	encoder := json.NewEncoder(os.Stdout)
	encoder.SetIndent("", "  ")
	if err := encoder.Encode(report); err != nil {
		fmt.Fprintln(os.Stderr, "coalmine-argocd:", err)
		return 2
	}
	if failed > 0 || len(results) == 0 {
		return 1
	}
	return 0
}

type request struct {
	Op                        string            `json:"op"`
	Obj                       Object            `json:"obj"`
	Script                    string            `json:"script"`
	Source                    string            `json:"source"`
	Action                    string            `json:"action"`
	Params                    map[string]string `json:"params"`
	Libraries                 Libraries         `json:"libraries"`
	Config                    Object            `json:"config"`
	Live                      Object            `json:"live"`
	IgnoreDifferences         []IgnoreRule      `json:"ignoreDifferences"`
	IgnoreResourceStatusField string            `json:"ignoreResourceStatusField"`
}

func serve(in io.Reader, out io.Writer) error {
	sources := map[string]Source{}
	scanner := bufio.NewScanner(in)
	scanner.Buffer(make([]byte, 0, 1<<20), 64<<20)
	encoder := json.NewEncoder(out)
	for scanner.Scan() {
		var req request
		var answer any
		if err := json.Unmarshal(scanner.Bytes(), &req); err != nil {
			answer = map[string]string{"error": "bad request: " + err.Error()}
		} else if result, err := handle(req, sources); err != nil {
			answer = map[string]string{"error": err.Error()}
		} else {
			answer = result
		}
		if err := encoder.Encode(answer); err != nil {
			return err
		}
	}
	return scanner.Err()
}

func handle(req request, sources map[string]Source) (any, error) {
	switch req.Op {
	case "health", "discovery", "action":
		return handleLua(req, sources)
	case "normalize", "diff", "syncTarget":
		normalizer, err := NewNormalizer(req.IgnoreDifferences, req.IgnoreResourceStatusField)
		if err != nil {
			return nil, err
		}
		switch req.Op {
		case "normalize":
			obj, skipped, err := normalizer.Normalize(req.Obj)
			return map[string]any{"object": obj, "skipped": skipped}, err
		case "diff":
			return normalizer.Diff(req.Config, req.Live)
		default:
			obj, err := normalizer.SyncTarget(req.Config, req.Live)
			return map[string]any{"object": obj}, err
		}
	}
	return nil, fmt.Errorf("unknown op %q", req.Op)
}

func handleLua(req request, sources map[string]Source) (any, error) {
	if req.Obj == nil {
		return nil, errors.New("obj is required")
	}
	script, sourceLibs := req.Script, Restricted
	if script == "" {
		if req.Source == "" {
			return nil, errors.New("give a script or a source")
		}
		source, ok := sources[req.Source]
		if !ok {
			var err error
			if source, err = OpenSource(req.Source); err != nil {
				return nil, err
			}
			sources[req.Source] = source
		}
		key := ConfigMapKey(req.Obj)
		var err error
		switch req.Op {
		case "health":
			script, sourceLibs, err = source.HealthScript(key)
		case "discovery":
			script, err = source.DiscoveryScript(key)
		default:
			script, err = source.ActionScript(key, req.Action)
		}
		if err != nil {
			return nil, fmt.Errorf("%s script for %s %q: %w", req.Op, key, req.Action, err)
		}
	}
	libs := req.Libraries
	if libs == "" {
		libs = Restricted
		if req.Op == "health" {
			libs = sourceLibs
		}
	}
	switch req.Op {
	case "health":
		status, err := Health(req.Obj, script, libs)
		return map[string]any{"health": status}, err
	case "discovery":
		actions, err := Discovery(req.Obj, []string{script}, libs)
		return map[string]any{"actions": actions}, err
	default:
		resources, err := Action(req.Obj, script, libs, req.Params)
		return map[string]any{"resources": resources}, err
	}
}
