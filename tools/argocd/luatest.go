package main

// Runs the tests that sit beside resource customizations in Argo CD's layout, as Argo CD's own
// tests do (util/lua/health_test.go and custom_actions_test.go):
//
//   - <group>/<Kind>/health_test.yaml: tests[].{inputPath, healthStatus{status, message}}; the
//     health script's result must equal healthStatus;
//   - <group>/<Kind>/actions/action_test.yaml: discoveryTests[].{inputPath, result[]}, where
//     every action discovered must be listed in result with the same fields, and
//     actionTests[].{action, inputPath, expectedOutputPath | expectedErrorMessage, parameters},
//     where every object the action returns must show no difference from the expected object
//     of the same kind, name and namespace under Argo CD's diff (fields the expected object
//     leaves out are not compared), or the error must read exactly expectedErrorMessage.
//
// Paths are relative to the test file. Each result also says whether the comparison holds
// exactly (no field left out, every expected action discovered), which is stricter.

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"
)

// Mode says which libraries each kind of script gets.
type Mode string

const (
	// ModeUpstream is Argo CD's test runner: open libraries for health and discovery
	// scripts, restricted ones for actions.
	ModeUpstream Mode = "upstream"
	// ModeProduction is Argo CD's controller and API server: health scripts get what their
	// source gives them, discovery and action scripts restricted libraries.
	ModeProduction Mode = "production"
	// ModeRestricted gives every script restricted libraries.
	ModeRestricted Mode = "restricted"
)

func (m Mode) health(source Libraries) Libraries {
	switch m {
	case ModeUpstream:
		return Open
	case ModeProduction:
		return source
	default:
		return Restricted
	}
}

func (m Mode) discovery() Libraries {
	if m == ModeUpstream {
		return Open
	}
	return Restricted
}

// TestResult is the outcome of one test case.
type TestResult struct {
	File      string `json:"file"`
	Kind      string `json:"kind"` // health, discovery or action
	Input     string `json:"input"`
	Action    string `json:"action,omitempty"`
	Libraries string `json:"libraries"`
	Passed    bool   `json:"passed"`
	Exact     bool   `json:"exact"`
	Expected  any    `json:"expected,omitempty"`
	Got       any    `json:"got,omitempty"`
	Error     string `json:"error,omitempty"`
}

type healthTests struct {
	Tests []struct {
		InputPath    string       `json:"inputPath"`
		HealthStatus HealthStatus `json:"healthStatus"`
	} `json:"tests"`
}

type actionTests struct {
	DiscoveryTests []struct {
		InputPath string           `json:"inputPath"`
		Result    []ResourceAction `json:"result"`
	} `json:"discoveryTests"`
	ActionTests []struct {
		Action               string            `json:"action"`
		InputPath            string            `json:"inputPath"`
		ExpectedOutputPath   string            `json:"expectedOutputPath"`
		ExpectedErrorMessage string            `json:"expectedErrorMessage"`
		Parameters           map[string]string `json:"parameters"`
	} `json:"actionTests"`
}

func readYAML(path string, into any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := yaml.Unmarshal(data, into); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// RunTests runs every health_test.yaml and action_test.yaml under root. Scripts come from
// scripts when it is set (a tree or an argocd-cm manifest), else from root itself.
func RunTests(root string, scripts Source, mode Mode) ([]TestResult, error) {
	if scripts == nil {
		scripts = Tree{Root: root}
	}
	var results []TestResult
	err := filepath.WalkDir(root, func(path string, entry fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch entry.Name() {
		case "health_test.yaml":
			found, err := runHealthTests(root, path, scripts, mode)
			results = append(results, found...)
			return err
		case "action_test.yaml":
			found, err := runActionTests(root, path, scripts, mode)
			results = append(results, found...)
			return err
		}
		return nil
	})
	return results, err
}

func relative(root, path string) string {
	if rel, err := filepath.Rel(root, path); err == nil {
		return rel
	}
	return path
}

func readObject(path string) (Object, error) {
	obj := Object{}
	return obj, readYAML(path, &obj)
}

func runHealthTests(root, path string, scripts Source, mode Mode) ([]TestResult, error) {
	var spec healthTests
	if err := readYAML(path, &spec); err != nil {
		return nil, err
	}
	dir := filepath.Dir(path)
	var results []TestResult
	for _, test := range spec.Tests {
		result := TestResult{File: relative(root, path), Kind: "health", Input: test.InputPath, Expected: test.HealthStatus}
		status, libs, err := func() (*HealthStatus, Libraries, error) {
			obj, err := readObject(filepath.Join(dir, test.InputPath))
			if err != nil {
				return nil, "", err
			}
			script, sourceLibs, err := scripts.HealthScript(ConfigMapKey(obj))
			if err != nil {
				return nil, "", fmt.Errorf("health script for %s: %w", ConfigMapKey(obj), err)
			}
			libs := mode.health(sourceLibs)
			status, err := Health(obj, script, libs)
			return status, libs, err
		}()
		result.Libraries = string(libs)
		if err != nil {
			result.Error = err.Error()
		} else {
			result.Got = status
			result.Passed = *status == test.HealthStatus
			result.Exact = result.Passed
		}
		results = append(results, result)
	}
	return results, nil
}

func runActionTests(root, path string, scripts Source, mode Mode) ([]TestResult, error) {
	var spec actionTests
	if err := readYAML(path, &spec); err != nil {
		return nil, err
	}
	dir := filepath.Dir(path)
	var results []TestResult
	for _, test := range spec.DiscoveryTests {
		result := TestResult{File: relative(root, path), Kind: "discovery", Input: test.InputPath,
			Libraries: string(mode.discovery()), Expected: test.Result}
		discovered, err := func() ([]ResourceAction, error) {
			obj, err := readObject(filepath.Join(dir, test.InputPath))
			if err != nil {
				return nil, err
			}
			script, err := scripts.DiscoveryScript(ConfigMapKey(obj))
			if err != nil {
				return nil, fmt.Errorf("discovery script for %s: %w", ConfigMapKey(obj), err)
			}
			return Discovery(obj, []string{script}, mode.discovery())
		}()
		if err != nil {
			result.Error = err.Error()
		} else {
			sort.Slice(discovered, func(i, j int) bool { return discovered[i].Name < discovered[j].Name })
			result.Got = discovered
			result.Passed = containsAll(test.Result, discovered)
			result.Exact = result.Passed && containsAll(discovered, test.Result)
		}
		results = append(results, result)
	}
	for _, test := range spec.ActionTests {
		result := TestResult{File: relative(root, path), Kind: "action", Input: test.InputPath,
			Action: test.Action, Libraries: string(Restricted)}
		result.Passed, result.Exact, result.Expected, result.Got, result.Error =
			runActionTest(dir, scripts, test.Action, test.InputPath, test.ExpectedOutputPath, test.ExpectedErrorMessage, test.Parameters)
		results = append(results, result)
	}
	return results, nil
}

func containsAll(among, items []ResourceAction) bool {
	for _, item := range items {
		found := false
		for _, candidate := range among {
			if reflect.DeepEqual(candidate, item) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func runActionTest(dir string, scripts Source, action, input, expectedPath, expectedError string, params map[string]string) (passed, exact bool, expected, got any, failure string) {
	source, err := readObject(filepath.Join(dir, input))
	if err != nil {
		return false, false, nil, nil, err.Error()
	}
	script, err := scripts.ActionScript(ConfigMapKey(source), action)
	if err != nil {
		return false, false, nil, nil, fmt.Sprintf("action %q for %s: %v", action, ConfigMapKey(source), err)
	}
	resources, err := Action(source, script, Restricted, params)
	if expectedError != "" {
		if err == nil {
			return false, false, expectedError, resources, "the action succeeded; an error was expected"
		}
		ok := err.Error() == expectedError
		return ok, ok, expectedError, err.Error(), ""
	}
	if err != nil {
		return false, false, nil, nil, err.Error()
	}
	wanted, err := expectedObjects(filepath.Join(dir, expectedPath))
	if err != nil {
		return false, false, nil, nil, err.Error()
	}
	returned := make([]Object, 0, len(resources))
	passed, exact = true, len(resources) == len(wanted)
	var problems []string
	for _, resource := range resources {
		returned = append(returned, resource.Resource)
		match := findSame(wanted, resource.Resource)
		if match == nil {
			passed, exact = false, false
			problems = append(problems, "no expected object for "+describe(resource.Resource))
			continue
		}
		if resource.Operation == "patch" && (ConfigMapKey(resource.Resource) != ConfigMapKey(source) ||
			metadataString(resource.Resource, "name") != metadataString(source, "name") ||
			metadataString(resource.Resource, "namespace") != metadataString(source, "namespace")) {
			passed = false
			problems = append(problems, "a patch must return the source object, not "+describe(resource.Resource))
		}
		same, err := sameUnderArgoDiff(match, resource.Resource)
		if err != nil {
			return false, false, wanted, returned, err.Error()
		}
		if !same {
			passed = false
			problems = append(problems, describe(resource.Resource)+" differs from the expected output")
		}
		a, errA := roundTrip(match)
		b, errB := roundTrip(resource.Resource)
		if errA != nil || errB != nil || !reflect.DeepEqual(a, b) {
			exact = false
		}
	}
	return passed, exact && passed, unwrap(wanted), unwrap(returned), strings.Join(problems, "; ")
}

func unwrap(objects []Object) any {
	if len(objects) == 1 {
		return objects[0]
	}
	return objects
}

func describe(obj Object) string {
	return fmt.Sprintf("%s %s/%s", ConfigMapKey(obj), metadataString(obj, "namespace"), metadataString(obj, "name"))
}

// expectedObjects reads an expected output: one object, or (for actions returning a list) a
// YAML list of {unstructuredObj: ...} wrappers, as Argo CD's test reads it.
func expectedObjects(path string) ([]Object, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if strings.HasPrefix(string(data), "-") {
		var wrapped []struct {
			UnstructuredObj Object `json:"unstructuredObj"`
		}
		if err := yaml.Unmarshal(data, &wrapped); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		objects := make([]Object, 0, len(wrapped))
		for _, entry := range wrapped {
			objects = append(objects, entry.UnstructuredObj)
		}
		return objects, nil
	}
	obj := Object{}
	if err := yaml.Unmarshal(data, &obj); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return []Object{obj}, nil
}

func findSame(candidates []Object, obj Object) Object {
	for _, candidate := range candidates {
		if ConfigMapKey(candidate) == ConfigMapKey(obj) && metadataString(candidate, "name") == metadataString(obj, "name") &&
			metadataString(candidate, "namespace") == metadataString(obj, "namespace") {
			return candidate
		}
	}
	return nil
}

var errSchemeKind = errors.New("kind diffed with strategic merge")

// sameUnderArgoDiff is gitops-engine's diff.Diff(expected, returned) with no ignore rules.
func sameUnderArgoDiff(expected, returned Object) (bool, error) {
	normalizer, err := NewNormalizer(nil, ignoreStatusNone)
	if err != nil {
		return false, err
	}
	result, err := normalizer.Diff(expected, returned)
	if err != nil {
		return false, fmt.Errorf("%w: %v", errSchemeKind, err)
	}
	return !result.Modified, nil
}
