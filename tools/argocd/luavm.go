package main

// Argo CD's Lua engine for resource customizations, reproduced on the same gopher-lua and
// gopher-json modules Argo CD links (versions pinned in go.mod to those of Argo CD v3.5.7).
//
// Written from a reading of Argo CD's util/lua/lua.go and oslib_safe.go (v3.5.7; unchanged in
// the part that matters in v3.6.1): what a script can call, how `obj` reaches it, and how the
// value it returns is read back. Each function below says which behaviour it reproduces.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	lua "github.com/yuin/gopher-lua"
	luajson "layeh.com/gopher-json"
)

// scriptTimeout is how long Argo CD lets one script run before it cancels the Lua state.
const scriptTimeout = time.Second

// Libraries says which Lua libraries a script gets.
type Libraries string

const (
	// Restricted is what Argo CD gives every action and discovery script, and health scripts
	// from argocd-cm unless `resource.customizations.useOpenLibs.<group_kind>` is "true":
	// package, base and table, and an os reduced to time and date through require("os").
	Restricted Libraries = "restricted"
	// Open is what Argo CD gives its built-in health scripts (and its own tests give health
	// and discovery scripts): every gopher-lua library, the full os included.
	Open Libraries = "open"
)

// Object is a Kubernetes object as JSON decodes it.
type Object = map[string]any

// HealthStatus is what a health script reports (Argo CD's health.HealthStatus).
type HealthStatus struct {
	Status  string `json:"status,omitempty"`
	Message string `json:"message,omitempty"`
}

// ResourceAction is one entry of a discovery script's result (Argo CD's
// v1alpha1.ResourceAction, same JSON names).
type ResourceAction struct {
	Name        string                `json:"name,omitempty"`
	Params      []ResourceActionParam `json:"params,omitempty"`
	Disabled    bool                  `json:"disabled,omitempty"`
	IconClass   string                `json:"iconClass,omitempty"`
	DisplayName string                `json:"displayName,omitempty"`
}

// ResourceActionParam names a parameter an action takes.
type ResourceActionParam struct {
	Name string `json:"name,omitempty"`
}

// ImpactedResource is one object an action returns and what Argo CD does with it.
type ImpactedResource struct {
	Resource  Object `json:"resource"`
	Operation string `json:"operation"`
}

var validHealth = map[string]bool{
	"Unknown": true, "Progressing": true, "Suspended": true,
	"Healthy": true, "Degraded": true, "Missing": true,
}

// run executes one script the way Argo CD's VM.runLuaWithResourceActionParameters does and
// returns the state, whose top holds the script's result.
func run(obj Object, script string, libs Libraries, params map[string]string) (*lua.LState, error) {
	L := lua.NewState(lua.Options{SkipOpenLibs: libs != Open})
	// Argo CD opens these four whatever the option (its "os" opener fills the table library
	// instead, see openSafeOS).
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
		{lua.OsLibName, openSafeOS},
	} {
		if err := L.CallByParam(lua.P{Fn: L.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			L.Close()
			return nil, fmt.Errorf("opening the %s library: %w", lib.name, err)
		}
	}
	// `local os = require("os")` must find the reduced table even without open libraries.
	L.PreloadModule(lua.OsLibName, loadSafeOS)

	ctx, cancel := context.WithTimeout(context.Background(), scriptTimeout)
	defer cancel()
	L.SetContext(ctx)

	actionParams := L.CreateTable(0, len(params))
	for name, value := range params {
		actionParams.RawSetH(lua.LString(name), lua.LString(value))
	}
	L.SetGlobal("actionParams", actionParams)
	L.SetGlobal("obj", luajson.DecodeValue(L, obj))

	err := L.DoString(script)
	var apiErr *lua.ApiError
	if errors.As(err, &apiErr) && apiErr.Type == lua.ApiErrorRun {
		// Argo CD drops the Lua stack trace from run-time errors: users see the message only.
		apiErr.StackTrace = ""
		err = apiErr
	}
	if err != nil {
		L.Close()
		return nil, err
	}
	return L, nil
}

// runForResult runs a script and returns the type of the value it returned and, for a table,
// its JSON encoding by gopher-json, as Argo CD reads it: an empty table becomes [], a table
// keyed 1..n an array, a table keyed by strings an object.
func runForResult(obj Object, script string, libs Libraries, params map[string]string) (lua.LValueType, []byte, error) {
	L, err := run(obj, script, libs, params)
	if err != nil {
		return lua.LTNil, nil, err
	}
	defer L.Close()
	value := L.Get(-1)
	if value.Type() != lua.LTTable {
		return value.Type(), nil, nil
	}
	data, err := luajson.Encode(value)
	return lua.LTTable, data, err
}

// Health runs a health script (Argo CD's VM.ExecuteHealthLua).
func Health(obj Object, script string, libs Libraries) (*HealthStatus, error) {
	kind, data, err := runForResult(obj, script, libs, nil)
	if err != nil {
		return nil, err
	}
	switch kind {
	case lua.LTNil:
		return &HealthStatus{}, nil
	case lua.LTTable:
	default:
		return nil, fmt.Errorf("expect table output from Lua script, not %s", kind)
	}
	status := &HealthStatus{}
	if err := json.Unmarshal(data, status); err != nil {
		// An empty table (encoded []), any array, or a field of the wrong type: Argo CD reads
		// no status at all rather than failing.
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			return &HealthStatus{}, nil
		}
		return nil, err
	}
	if !validHealth[status.Status] {
		return &HealthStatus{Status: "Unknown", Message: "Lua returned an invalid health status"}, nil
	}
	return status, nil
}

// Discovery runs discovery scripts in order (Argo CD's VM.ExecuteResourceActionDiscovery):
// the first script to name an action wins, as built-in actions merge after argocd-cm ones.
func Discovery(obj Object, scripts []string, libs Libraries) ([]ResourceAction, error) {
	if len(scripts) == 0 {
		return nil, errors.New("no action discovery script provided")
	}
	found := map[string]ResourceAction{}
	var order []string
	for _, script := range scripts {
		kind, data, err := runForResult(obj, script, libs, nil)
		if err != nil {
			if kind == lua.LTTable {
				return nil, fmt.Errorf("error in converting to lua table: %w", err)
			}
			return nil, err
		}
		if kind != lua.LTTable {
			return nil, fmt.Errorf("expect table output from Lua script, not %s", kind)
		}
		if string(data) == "[]" {
			continue // no actions from this script
		}
		var actions map[string]any
		if err := json.Unmarshal(data, &actions); err != nil {
			return nil, fmt.Errorf("error unmarshaling action table: %w", err)
		}
		for name, spec := range actions {
			if _, seen := found[name]; seen {
				continue
			}
			action := ResourceAction{Name: name, Disabled: disabledFlag(spec)}
			if _, empty := spec.([]any); !empty {
				// Anything but an empty table is read as the action's fields; "name" is
				// taken from the table when it sets one, as Argo CD's unmarshal does.
				encoded, err := json.Marshal(spec)
				if err != nil {
					return nil, fmt.Errorf("error marshaling resource action: %w", err)
				}
				if err := json.Unmarshal(encoded, &action); err != nil {
					return nil, fmt.Errorf("error unmarshaling resource action: %w", err)
				}
			}
			found[name] = action
			order = append(order, name)
		}
	}
	result := make([]ResourceAction, 0, len(order))
	for _, name := range order {
		result = append(result, found[name])
	}
	return result, nil
}

// disabledFlag reads "disabled" the way Argo CD's isActionDisabled does: only a boolean counts.
func disabledFlag(spec any) bool {
	fields, ok := spec.(map[string]any)
	if !ok {
		return false
	}
	disabled, ok := fields["disabled"].(bool)
	return ok && disabled
}

// Action runs an action script (Argo CD's VM.ExecuteResourceAction). An object returned is a
// patch of the source object; a list returned holds {operation, resource} entries.
func Action(obj Object, script string, libs Libraries, params map[string]string) ([]ImpactedResource, error) {
	kind, data, err := runForResult(obj, script, libs, params)
	if err != nil {
		return nil, err
	}
	if kind != lua.LTTable {
		return nil, fmt.Errorf("expect table output from Lua script, not %s", kind)
	}
	text := string(data)
	if len(text) < 2 {
		return nil, errors.New("Lua output was not a valid json object or array")
	}
	var resources []ImpactedResource
	if strings.HasPrefix(text, "[") && strings.HasSuffix(text, "]") {
		var raw []struct {
			Resource  Object          `json:"resource"`
			Operation json.RawMessage `json:"operation"`
		}
		if err := json.Unmarshal(data, &raw); err != nil {
			return nil, err
		}
		for _, entry := range raw {
			var operation string
			switch string(entry.Operation) {
			case `"create"`:
				operation = "create"
			case `"patch"`:
				operation = "patch"
			default:
				return nil, fmt.Errorf("unsupported operation: %s", entry.Operation)
			}
			resources = append(resources, ImpactedResource{Resource: entry.Resource, Operation: operation})
		}
	} else {
		var returned Object
		if err := json.Unmarshal(data, &returned); err != nil {
			return nil, err
		}
		resources = []ImpactedResource{{Resource: returned, Operation: "patch"}}
	}
	for _, resource := range resources {
		if resource.Operation == "patch" && resource.Resource != nil {
			restoreEmptyObjects(resource.Resource, obj)
		}
	}
	return resources, nil
}

// restoreEmptyObjects undoes what Lua cannot tell apart: an empty table comes back as [] even
// where the object passed in held {}. Like Argo CD's cleanReturnedObj, it puts {} back where
// the original had an object, walking maps and, index by index, arrays the original also had.
func restoreEmptyObjects(returned, original Object) {
	for key, before := range original {
		after, ok := returned[key]
		if !ok {
			continue
		}
		switch after := after.(type) {
		case map[string]any:
			if before, ok := before.(map[string]any); ok {
				restoreEmptyObjects(after, before)
			}
		case []any:
			switch before := before.(type) {
			case map[string]any:
				if len(after) == 0 {
					returned[key] = map[string]any{}
				}
			case []any:
				restoreEmptyInArray(after, before)
			}
		}
	}
}

func restoreEmptyInArray(returned, original []any) {
	for i := range returned {
		if i >= len(original) {
			return // items the action added have no original to compare with
		}
		switch after := returned[i].(type) {
		case map[string]any:
			if before, ok := original[i].(map[string]any); ok {
				restoreEmptyObjects(after, before)
			}
		case []any:
			if before, ok := original[i].([]any); ok {
				restoreEmptyInArray(after, before)
			}
		}
	}
}
