package main

// Where Argo CD finds the Lua for an object: in its built-in tree (resource_customizations/,
// laid out <group>/<Kind>/health.lua, .../actions/discovery.lua, .../actions/<name>/action.lua)
// or in argocd-cm keys (resource.customizations.<health|actions|useOpenLibs>.<group>_<Kind>).
// The key is the object's group and kind, as Argo CD's GetConfigMapKey builds it. Wildcard
// directories and the merging of argocd-cm actions with built-in ones are not reproduced.

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"
)

// errNoScript says the source has no script of that kind for the object.
var errNoScript = errors.New("no script")

// Source finds the scripts for an object and says which libraries Argo CD would give them.
type Source interface {
	HealthScript(key string) (string, Libraries, error)
	DiscoveryScript(key string) (string, error)
	ActionScript(key, action string) (string, error)
}

// ConfigMapKey is Argo CD's key for an object: "<group>/<Kind>", or "<Kind>" in the core group.
func ConfigMapKey(obj Object) string {
	apiVersion, _ := obj["apiVersion"].(string)
	kind, _ := obj["kind"].(string)
	group := ""
	if slash := strings.Index(apiVersion, "/"); slash >= 0 {
		group = apiVersion[:slash]
	}
	if group == "" {
		return kind
	}
	return group + "/" + kind
}

// Tree is a directory laid out like Argo CD's resource_customizations/.
type Tree struct{ Root string }

func (t Tree) read(parts ...string) (string, error) {
	data, err := os.ReadFile(filepath.Join(append([]string{t.Root}, parts...)...))
	if errors.Is(err, os.ErrNotExist) {
		return "", errNoScript
	}
	return string(data), err
}

// HealthScript: built-in health scripts run with open libraries. When no directory is named
// after the key, a directory whose name has "_" in it serves as a pattern ("_" matching any
// run of characters but "/"), the first in sorted order winning, as for Argo CD's built-ins.
func (t Tree) HealthScript(key string) (string, Libraries, error) {
	script, err := t.read(key, "health.lua")
	if !errors.Is(err, errNoScript) {
		return script, Open, err
	}
	patterns, err := filepath.Glob(filepath.Join(t.Root, "*", "*", "health.lua"))
	if err != nil {
		return "", Open, err
	}
	var dirs []string
	for _, found := range patterns {
		dir, _ := filepath.Rel(t.Root, filepath.Dir(found))
		if dir = filepath.ToSlash(dir); strings.Contains(dir, "_") {
			dirs = append(dirs, dir)
		}
	}
	sort.Strings(dirs)
	for _, dir := range dirs {
		if matched, _ := path.Match(strings.ReplaceAll(dir, "_", "*"), key); matched {
			script, err := t.read(dir, "health.lua")
			return script, Open, err
		}
	}
	return "", Open, errNoScript
}

func (t Tree) DiscoveryScript(key string) (string, error) {
	return t.read(key, "actions", "discovery.lua")
}

func (t Tree) ActionScript(key, action string) (string, error) {
	return t.read(key, "actions", action, "action.lua")
}

// ConfigMap is the data of an argocd-cm ConfigMap.
type ConfigMap struct{ Data map[string]string }

// ReadConfigMap reads an argocd-cm manifest (or patch) from a YAML file.
func ReadConfigMap(path string) (ConfigMap, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return ConfigMap{}, err
	}
	var manifest struct {
		Data map[string]string `json:"data"`
	}
	if err := yaml.Unmarshal(raw, &manifest); err != nil {
		return ConfigMap{}, fmt.Errorf("%s: %w", path, err)
	}
	return ConfigMap{Data: manifest.Data}, nil
}

// overrideKey is the argocd-cm suffix for a key: "<group>_<Kind>" or "<Kind>".
func overrideKey(key string) string { return strings.Replace(key, "/", "_", 1) }

// HealthScript: argocd-cm health scripts get open libraries only when useOpenLibs says so.
func (c ConfigMap) HealthScript(key string) (string, Libraries, error) {
	script, ok := c.Data["resource.customizations.health."+overrideKey(key)]
	if !ok || script == "" {
		return "", Restricted, errNoScript
	}
	libs := Restricted
	if flag, set := c.Data["resource.customizations.useOpenLibs."+overrideKey(key)]; set {
		open, err := strconv.ParseBool(flag)
		if err != nil {
			return "", Restricted, fmt.Errorf("resource.customizations.useOpenLibs.%s: %w", overrideKey(key), err)
		}
		if open {
			libs = Open
		}
	}
	return script, libs, nil
}

type actionsValue struct {
	Discovery   string `json:"discovery.lua"`
	Definitions []struct {
		Name      string `json:"name"`
		ActionLua string `json:"action.lua"`
	} `json:"definitions"`
}

func (c ConfigMap) actions(key string) (actionsValue, error) {
	var value actionsValue
	raw, ok := c.Data["resource.customizations.actions."+overrideKey(key)]
	if !ok || raw == "" {
		return value, errNoScript
	}
	err := yaml.Unmarshal([]byte(raw), &value)
	return value, err
}

func (c ConfigMap) DiscoveryScript(key string) (string, error) {
	value, err := c.actions(key)
	return value.Discovery, err
}

func (c ConfigMap) ActionScript(key, action string) (string, error) {
	value, err := c.actions(key)
	if err != nil {
		return "", err
	}
	for _, definition := range value.Definitions {
		if definition.Name == action {
			return definition.ActionLua, nil
		}
	}
	return "", errNoScript
}

// OpenSource reads a tree (a directory) or an argocd-cm manifest (a file).
func OpenSource(path string) (Source, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if info.IsDir() {
		return Tree{Root: path}, nil
	}
	return ReadConfigMap(path)
}
