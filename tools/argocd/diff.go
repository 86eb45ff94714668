package main

// Argo CD's diff, for objects outside client-go's scheme (custom resources such as HTTPRoute,
// VirtualService and CanaryRollout), reproduced on the libraries Argo CD links:
//
//   - the ignore normalizer (argo-cd util/argo/normalizers/diff_normalizer.go): jsonPointers
//     become JSON patch "remove" operations (evanphx/json-patch), jqPathExpressions are run as
//     del(<expression>) by gojq with a one second timeout, a rule that fails on an object is
//     skipped, and status is ignored for every kind unless ignoreResourceStatusField says
//     otherwise (util/settings/settings.go);
//   - the legacy diff (gitops-engine pkg/diff/diff.go, Diff and ThreeWayDiff): both sides are
//     normalized, the live object's last-applied-configuration (or, without one, the desired
//     object itself) is the original of a three-way JSON merge patch computed by
//     k8s.io/apimachinery's jsonmergepatch, that patch is applied to the live object, and the
//     resource is out of sync when the result differs from the live object;
//   - RespectIgnoreDifferences (argo-cd controller/sync.go, normalizeTargetResources): the
//     object a sync applies is the normalized desired object with the ignored fields copied
//     back from the live one by a JSON merge patch, then non-ignored fields restored.
//
// Not reproduced: managedFieldsManagers, knownTypeFields, the server-side and structured
// merge diffs, resource tracking, and kinds in client-go's scheme (strategic merge).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"

	jsonpatch "github.com/evanphx/json-patch"
	jsonpatchv5 "github.com/evanphx/json-patch/v5"
	"github.com/gobwas/glob"
	"github.com/itchyny/gojq"
	"k8s.io/apimachinery/pkg/util/jsonmergepatch"
)

const (
	jqTimeout                   = time.Second
	lastAppliedAnnotation       = "kubectl.kubernetes.io/last-applied-configuration"
	ignoreStatusAll             = "all"
	ignoreStatusCRD             = "crd"
	ignoreStatusNone            = "none"
	customResourceDefinitionKey = "apiextensions.k8s.io/CustomResourceDefinition"
)

// IgnoreRule is one entry of an Application's spec.ignoreDifferences (or an argocd-cm
// resource.customizations.ignoreDifferences value with group and kind filled in).
type IgnoreRule struct {
	Group                 string   `json:"group,omitempty"`
	Kind                  string   `json:"kind"`
	Name                  string   `json:"name,omitempty"`
	Namespace             string   `json:"namespace,omitempty"`
	JSONPointers          []string `json:"jsonPointers,omitempty"`
	JQPathExpressions     []string `json:"jqPathExpressions,omitempty"`
	ManagedFieldsManagers []string `json:"managedFieldsManagers,omitempty"`
}

type ignorePatch struct {
	group, kind, name, namespace string
	apply                        func([]byte) ([]byte, error)
}

// Normalizer removes ignored fields from objects.
type Normalizer struct{ patches []ignorePatch }

// NewNormalizer compiles the rules, plus the status rule that ignoreResourceStatusField
// ("all" when empty, "crd" or "none") adds to Argo CD's resource overrides.
func NewNormalizer(rules []IgnoreRule, ignoreStatus string) (*Normalizer, error) {
	all := append([]IgnoreRule(nil), rules...)
	switch ignoreStatus {
	case "", ignoreStatusAll:
		all = append(all, IgnoreRule{Group: "*", Kind: "*", JSONPointers: []string{"/status"}})
	case ignoreStatusCRD:
		group, kind, _ := strings.Cut(customResourceDefinitionKey, "/")
		all = append(all, IgnoreRule{Group: group, Kind: kind, JSONPointers: []string{"/status"}})
	case ignoreStatusNone:
	default:
		return nil, fmt.Errorf("ignoreResourceStatusField %q: use all, crd or none", ignoreStatus)
	}
	n := &Normalizer{}
	for _, rule := range all {
		if len(rule.ManagedFieldsManagers) > 0 {
			return nil, errors.New("managedFieldsManagers is not reproduced by this harness")
		}
		base := ignorePatch{group: rule.Group, kind: rule.Kind, name: rule.Name, namespace: rule.Namespace}
		for _, pointer := range rule.JSONPointers {
			ops, err := json.Marshal([]map[string]string{{"op": "remove", "path": pointer}})
			if err != nil {
				return nil, err
			}
			patch, err := jsonpatch.DecodePatch(ops)
			if err != nil {
				return nil, err
			}
			p := base
			p.apply = patch.Apply
			n.patches = append(n.patches, p)
		}
		for _, expression := range rule.JQPathExpressions {
			query, err := gojq.Parse(fmt.Sprintf("del(%s)", expression))
			if err != nil {
				return nil, fmt.Errorf("jqPathExpression %q: %w", expression, err)
			}
			code, err := gojq.Compile(query)
			if err != nil {
				return nil, fmt.Errorf("jqPathExpression %q: %w", expression, err)
			}
			p := base
			p.apply = func(data []byte) ([]byte, error) { return runDeletion(code, data) }
			n.patches = append(n.patches, p)
		}
	}
	return n, nil
}

// runDeletion runs a compiled del(...) on a document: exactly one result, within the timeout.
func runDeletion(code *gojq.Code, data []byte) ([]byte, error) {
	doc := map[string]any{}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), jqTimeout)
	defer cancel()
	results := code.RunWithContext(ctx, doc)
	first, ok := results.Next()
	if !ok {
		return nil, errors.New("JQ patch did not return any data")
	}
	if err, isErr := first.(error); isErr {
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, fmt.Errorf("JQ patch execution timed out (%v)", jqTimeout)
		}
		return nil, fmt.Errorf("JQ patch returned error: %w", err)
	}
	if _, more := results.Next(); more {
		return nil, errors.New("JQ patch returned multiple objects")
	}
	return json.Marshal(first)
}

func globMatch(pattern, text string) bool {
	compiled, err := glob.Compile(pattern)
	return err == nil && compiled.Match(text)
}

// Normalize applies every rule that matches the object's group, kind, name and namespace, in
// order, and reports the rules that failed on it (Argo CD skips those, logging at debug level).
func (n *Normalizer) Normalize(obj Object) (Object, []string, error) {
	if obj == nil {
		return nil, nil, nil
	}
	group, kind := groupKind(obj)
	name, namespace := metadataString(obj, "name"), metadataString(obj, "namespace")
	var matched []ignorePatch
	for _, p := range n.patches {
		if globMatch(p.group, group) && globMatch(p.kind, kind) &&
			(p.name == "" || p.name == name) && (p.namespace == "" || p.namespace == namespace) {
			matched = append(matched, p)
		}
	}
	data, err := json.Marshal(obj)
	if err != nil {
		return nil, nil, err
	}
	var skipped []string
	for _, p := range matched {
		patched, err := p.apply(data)
		if err != nil {
			// Argo CD does not even log a pointer that is absent; anything else is worth seeing.
			if message := err.Error(); !strings.Contains(message, "Unable to remove nonexistent key") &&
				!strings.Contains(message, "remove operation does not apply: doc is missing path") {
				skipped = append(skipped, message)
			}
			continue
		}
		data = patched
	}
	result := Object{}
	if err := json.Unmarshal(data, &result); err != nil {
		return nil, nil, err
	}
	return result, skipped, nil
}

func groupKind(obj Object) (string, string) {
	key := ConfigMapKey(obj)
	if group, kind, found := strings.Cut(key, "/"); found {
		return group, kind
	}
	return "", key
}

func metadataString(obj Object, field string) string {
	metadata, _ := obj["metadata"].(map[string]any)
	value, _ := metadata[field].(string)
	return value
}

// schemeGroups are the API groups of client-go's scheme: Argo CD diffs their kinds with
// strategic merge patches and scheme defaults, which this harness does not reproduce.
var schemeGroups = map[string]bool{
	"": true, "admissionregistration.k8s.io": true, "apps": true, "authentication.k8s.io": true,
	"authorization.k8s.io": true, "autoscaling": true, "batch": true, "certificates.k8s.io": true,
	"coordination.k8s.io": true, "discovery.k8s.io": true, "events.k8s.io": true,
	"extensions": true, "flowcontrol.apiserver.k8s.io": true, "networking.k8s.io": true,
	"node.k8s.io": true, "policy": true, "rbac.authorization.k8s.io": true,
	"resource.k8s.io": true, "scheduling.k8s.io": true, "storage.k8s.io": true,
	"storagemigration.k8s.io": true, "internal.apiserver.k8s.io": true,
}

// DiffResult is the outcome of Argo CD's comparison of one resource.
type DiffResult struct {
	Modified       bool   `json:"modified"`
	NormalizedLive Object `json:"normalizedLive"`
	PredictedLive  Object `json:"predictedLive"`
	// ThreeWay says whether the live object's last-applied-configuration was the original.
	ThreeWay bool     `json:"threeWay"`
	Skipped  []string `json:"skipped,omitempty"`
}

// roundTrip copies an object through JSON, as gitops-engine's remarshal does for kinds
// outside the scheme, which also turns every number into a float64.
func roundTrip(obj Object) (Object, error) {
	if obj == nil {
		return nil, nil
	}
	data, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	out := Object{}
	err = json.Unmarshal(data, &out)
	return out, err
}

// engineNormalize is gitops-engine's Normalize for these kinds: creationTimestamp goes, then
// Argo CD's normalizer runs.
func (n *Normalizer) engineNormalize(obj Object) (Object, []string, error) {
	if metadata, ok := obj["metadata"].(map[string]any); ok {
		delete(metadata, "creationTimestamp")
	}
	return n.Normalize(obj)
}

// Diff compares a desired object (from Git, namespace already set as Argo CD sets it) with
// the live one.
func (n *Normalizer) Diff(config, live Object) (*DiffResult, error) {
	if config == nil || live == nil {
		return nil, errors.New("diff needs both the desired and the live object")
	}
	if group, _ := groupKind(config); schemeGroups[group] {
		return nil, fmt.Errorf("%s is diffed with strategic merge by Argo CD; this harness only reproduces custom resources", ConfigMapKey(config))
	}
	var skipped, more []string
	config, err := roundTrip(config)
	if err == nil {
		live, err = roundTrip(live)
	}
	if err == nil {
		config, skipped, err = n.engineNormalize(config)
	}
	if err == nil {
		live, more, err = n.engineNormalize(live)
		skipped = append(skipped, more...)
	}
	if err != nil {
		return nil, err
	}
	orig, threeWay := config, false
	if text, ok := annotation(live, lastAppliedAnnotation); ok {
		applied := Object{}
		if err := json.Unmarshal([]byte(text), &applied); err == nil {
			if applied, more, err = n.engineNormalize(applied); err != nil {
				return nil, err
			}
			skipped = append(skipped, more...)
			orig, threeWay = applied, true
		}
	}
	result, err := threeWayDiff(orig, config, live)
	if err != nil && threeWay {
		// gitops-engine falls back to the two-way diff when the three-way one fails.
		threeWay = false
		result, err = threeWayDiff(config, config, live)
	}
	if err != nil {
		return nil, err
	}
	result.ThreeWay, result.Skipped = threeWay, skipped
	return result, nil
}

func annotation(obj Object, key string) (string, bool) {
	metadata, _ := obj["metadata"].(map[string]any)
	annotations, _ := metadata["annotations"].(map[string]any)
	value, ok := annotations[key].(string)
	return value, ok
}

// withoutNamespace drops metadata.namespace and an empty annotations map, which live objects
// and Git manifests disagree on for reasons nobody cares about (gitops-engine's
// removeNamespaceAnnotation).
func withoutNamespace(obj Object) (Object, error) {
	out, err := roundTrip(obj)
	if err != nil {
		return nil, err
	}
	if metadata, ok := out["metadata"].(map[string]any); ok {
		delete(metadata, "namespace")
		if annotations, present := metadata["annotations"]; present {
			if m, isMap := annotations.(map[string]any); annotations == nil || (isMap && len(m) == 0) {
				delete(metadata, "annotations")
			}
		}
	}
	return out, nil
}

func threeWayDiff(orig, config, live Object) (*DiffResult, error) {
	orig, err := withoutNamespace(orig)
	if err != nil {
		return nil, err
	}
	config, err = withoutNamespace(config)
	if err != nil {
		return nil, err
	}
	// Fields the API server added (defaults, status, metadata) are not compared: only what the
	// original (last applied) object names is kept of the live one for the patch.
	origBytes, err := json.Marshal(orig)
	if err != nil {
		return nil, err
	}
	configBytes, err := json.Marshal(config)
	if err != nil {
		return nil, err
	}
	liveSubsetBytes, err := json.Marshal(keepFieldsOf(orig, live))
	if err != nil {
		return nil, err
	}
	patch, err := jsonmergepatch.CreateThreeWayJSONMergePatch(origBytes, configBytes, liveSubsetBytes)
	if err != nil {
		return nil, fmt.Errorf("three-way merge patch: %w", err)
	}
	liveBytes, err := json.Marshal(live)
	if err != nil {
		return nil, err
	}
	predictedBytes, err := jsonpatchv5.MergePatch(liveBytes, patch)
	if err != nil {
		return nil, fmt.Errorf("applying the merge patch to the live object: %w", err)
	}
	predicted := Object{}
	if err := json.Unmarshal(predictedBytes, &predicted); err != nil {
		return nil, err
	}
	return &DiffResult{
		Modified:       string(liveBytes) != string(predictedBytes),
		NormalizedLive: live,
		PredictedLive:  predicted,
	}, nil
}

// keepFieldsOf keeps of live only the keys that exist in config, recursively; list items are
// matched by position and items beyond config's length are kept whole (gitops-engine's
// RemoveMapFields and RemoveListFields).
func keepFieldsOf(config, live map[string]any) map[string]any {
	out := map[string]any{}
	for key, want := range config {
		have, ok := live[key]
		if !ok {
			continue
		}
		if have != nil {
			have = keepFieldsOfValue(want, have)
		}
		out[key] = have
	}
	return out
}

func keepFieldsOfValue(config, live any) any {
	switch c := config.(type) {
	case map[string]any:
		if l, ok := live.(map[string]any); ok {
			return keepFieldsOf(c, l)
		}
	case []any:
		if l, ok := live.([]any); ok {
			out := make([]any, 0, len(l))
			for i, item := range l {
				if i < len(c) && item != nil {
					item = keepFieldsOfValue(c[i], item)
				}
				out = append(out, item)
			}
			return out
		}
	}
	return live
}

// SyncTarget is the object a sync with RespectIgnoreDifferences=true applies for a live
// object that exists: the desired object, except that every ignored field takes its live value.
func (n *Normalizer) SyncTarget(config, live Object) (Object, error) {
	if group, _ := groupKind(config); schemeGroups[group] {
		return nil, fmt.Errorf("%s is patched with strategic merge by Argo CD; this harness only reproduces custom resources", ConfigMapKey(config))
	}
	original, err := roundTrip(config)
	if err != nil {
		return nil, err
	}
	normalizedTarget, _, err := n.Normalize(original)
	if err != nil {
		return nil, err
	}
	normalizedLive, _, err := n.Normalize(live)
	if err != nil {
		return nil, err
	}
	// status belongs to the resource's controller: it is never copied into what a sync applies.
	liveNoStatus, err := roundTrip(live)
	if err != nil {
		return nil, err
	}
	delete(liveNoStatus, "status")
	normalizedLiveNoStatus, err := roundTrip(normalizedLive)
	if err != nil {
		return nil, err
	}
	delete(normalizedLiveNoStatus, "status")

	from, err := json.Marshal(normalizedLiveNoStatus)
	if err != nil {
		return nil, err
	}
	to, err := json.Marshal(liveNoStatus)
	if err != nil {
		return nil, err
	}
	livePatch, err := jsonpatch.CreateMergePatch(from, to)
	if err != nil {
		return nil, err
	}
	targetBytes, err := json.Marshal(normalizedTarget)
	if err != nil {
		return nil, err
	}
	patchedBytes, err := jsonpatch.MergePatch(targetBytes, livePatch)
	if err != nil {
		return nil, err
	}
	patched := Object{}
	if err := json.Unmarshal(patchedBytes, &patched); err != nil {
		return nil, err
	}
	restoreNotIgnored(patched, original, normalizedTarget, normalizedLive)
	return patched, nil
}

// restoreNotIgnored puts back desired values that the live patch overwrote although the
// normalizer left them alone (Argo CD's restoreNonIgnoredFields). It walks maps only: a list
// that holds an ignored field anywhere counts as ignored as a whole, so the live list wins.
func restoreNotIgnored(patched, original, normalizedTarget, normalizedLive map[string]any) {
	for key, want := range original {
		have, inPatched := patched[key]
		normalized, inNormalized := normalizedTarget[key]
		haveMap, haveIsMap := have.(map[string]any)
		wantMap, wantIsMap := want.(map[string]any)
		normalizedMap, normalizedIsMap := normalized.(map[string]any)
		if inPatched && haveIsMap && wantIsMap && normalizedIsMap {
			liveMap, _ := normalizedLive[key].(map[string]any)
			restoreNotIgnored(haveMap, wantMap, normalizedMap, liveMap)
			continue
		}
		if inNormalized && reflect.DeepEqual(normalized, want) && (!inPatched || !reflect.DeepEqual(have, want)) {
			patched[key] = want
		}
	}
	for key := range patched {
		if _, inOriginal := original[key]; inOriginal {
			continue
		}
		if _, inLive := normalizedLive[key]; inLive {
			delete(patched, key)
		}
	}
}
