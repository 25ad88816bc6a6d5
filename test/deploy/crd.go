package deploy

import (
	"encoding/json"
	"errors"
	"fmt"

	egv1a1 "github.com/envoyproxy/gateway/api/v1alpha1"
	"google.golang.org/protobuf/encoding/protojson"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	securityv1 "istio.io/api/security/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwapiv1b1 "sigs.k8s.io/gateway-api/apis/v1beta1"
)

// The custom resources tokengate ships are decoded strictly (unknown fields
// fail) into their projects' own Go types where those exist — Istio's API
// protos, Envoy Gateway's and Gateway API's structs — and the required
// fields their CRDs enforce (OpenAPI `required`, CEL rules) are checked here,
// since there is no API server to do it.

// ServiceMonitor is the part of prometheus-operator's monitoring.coreos.com/v1
// ServiceMonitor the chart uses, with its CRD's required fields. (The
// operator's Go module is not needed for this.)
type ServiceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		JobLabel          string `json:"jobLabel,omitempty"`
		NamespaceSelector *struct {
			Any        bool     `json:"any,omitempty"`
			MatchNames []string `json:"matchNames,omitempty"`
		} `json:"namespaceSelector,omitempty"`
		Selector  *metav1.LabelSelector `json:"selector"`
		Endpoints []SMEndpoint          `json:"endpoints"`
	} `json:"spec"`
}

// SMEndpoint is one scrape endpoint.
type SMEndpoint struct {
	Port          string `json:"port,omitempty"`
	TargetPort    any    `json:"targetPort,omitempty"`
	Path          string `json:"path,omitempty"`
	Scheme        string `json:"scheme,omitempty"`
	Interval      string `json:"interval,omitempty"`
	ScrapeTimeout string `json:"scrapeTimeout,omitempty"`
	TLSConfig     *struct {
		ServerName string          `json:"serverName,omitempty"`
		CA         *SecretOrConfig `json:"ca,omitempty"`
		Cert       *SecretOrConfig `json:"cert,omitempty"`
		KeySecret  *SecretKeyRef   `json:"keySecret,omitempty"`
	} `json:"tlsConfig,omitempty"`
}

// SecretOrConfig is prometheus-operator's reference to a Secret or
// ConfigMap key (the chart uses Secrets).
type SecretOrConfig struct {
	Secret *SecretKeyRef `json:"secret,omitempty"`
}

// SecretKeyRef names a key of a Secret.
type SecretKeyRef struct {
	Name string `json:"name"`
	Key  string `json:"key"`
}

// Certificate is the part of cert-manager's cert-manager.io/v1 Certificate
// the chart uses, with its CRD's required fields.
type Certificate struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		SecretName string `json:"secretName"`
		IssuerRef  struct {
			Name  string `json:"name"`
			Kind  string `json:"kind,omitempty"`
			Group string `json:"group,omitempty"`
		} `json:"issuerRef"`
		Duration    string `json:"duration,omitempty"`
		RenewBefore string `json:"renewBefore,omitempty"`
		PrivateKey  *struct {
			Algorithm      string `json:"algorithm,omitempty"`
			Size           int    `json:"size,omitempty"`
			RotationPolicy string `json:"rotationPolicy,omitempty"`
		} `json:"privateKey,omitempty"`
		Usages   []string `json:"usages,omitempty"`
		DNSNames []string `json:"dnsNames,omitempty"`
	} `json:"spec"`
}

func (c *Certificate) validate() error {
	var errs []error
	if c.Spec.SecretName == "" {
		errs = append(errs, errors.New("spec.secretName is required"))
	}
	if c.Spec.IssuerRef.Name == "" {
		errs = append(errs, errors.New("spec.issuerRef.name is required"))
	}
	if len(c.Spec.DNSNames) == 0 {
		errs = append(errs, errors.New("spec.dnsNames: at least one name (or another subject) is required"))
	}
	return errors.Join(errs...)
}

func (sm *ServiceMonitor) validate() error {
	var errs []error
	if sm.Spec.Selector == nil {
		errs = append(errs, errors.New("spec.selector is required"))
	}
	if len(sm.Spec.Endpoints) == 0 {
		errs = append(errs, errors.New("spec.endpoints must not be empty"))
	}
	for i, ep := range sm.Spec.Endpoints {
		if ep.Port == "" && ep.TargetPort == nil {
			errs = append(errs, fmt.Errorf("spec.endpoints[%d]: port or targetPort is required", i))
		}
	}
	return errors.Join(errs...)
}

// AuthorizationPolicy is Istio's security.istio.io/v1 object; the spec is
// Istio's own proto, decoded with protojson (unknown fields fail).
type AuthorizationPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              json.RawMessage `json:"spec"`

	spec *securityv1.AuthorizationPolicy
}

func (ap *AuthorizationPolicy) validate() error {
	ap.spec = &securityv1.AuthorizationPolicy{}
	if err := protojson.Unmarshal(ap.Spec, ap.spec); err != nil {
		return fmt.Errorf("spec: %w", err)
	}
	var errs []error
	if ap.Name == "" || ap.Namespace == "" {
		errs = append(errs, errors.New("metadata.name and metadata.namespace are required"))
	}
	if ap.spec.GetAction() == securityv1.AuthorizationPolicy_CUSTOM && ap.spec.GetProvider().GetName() == "" {
		errs = append(errs, errors.New("spec.provider.name is required with action CUSTOM"))
	}
	if ap.spec.GetProvider() != nil && ap.spec.GetAction() != securityv1.AuthorizationPolicy_CUSTOM {
		errs = append(errs, errors.New("spec.provider is only valid with action CUSTOM"))
	}
	if len(ap.spec.GetRules()) == 0 {
		errs = append(errs, errors.New("spec.rules is empty: a CUSTOM policy without rules matches nothing"))
	}
	return errors.Join(errs...)
}

// IstioOperator is the install.istio.io/v1alpha1 envelope; only meshConfig
// is used, decoded into Istio's MeshConfig proto.
type IstioOperator struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		MeshConfig json.RawMessage `json:"meshConfig"`
	} `json:"spec"`

	mesh *meshv1alpha1.MeshConfig
}

func (io *IstioOperator) validate() error {
	io.mesh = &meshv1alpha1.MeshConfig{}
	if err := protojson.Unmarshal(io.Spec.MeshConfig, io.mesh); err != nil {
		return fmt.Errorf("spec.meshConfig: %w", err)
	}
	var errs []error
	for i, p := range io.mesh.GetExtensionProviders() {
		if p.GetName() == "" {
			errs = append(errs, fmt.Errorf("extensionProviders[%d].name is required", i))
		}
		if g := p.GetEnvoyExtAuthzGrpc(); g != nil {
			if g.GetService() == "" || g.GetPort() == 0 {
				errs = append(errs, fmt.Errorf("extensionProviders[%d].envoyExtAuthzGrpc: service and port are required", i))
			}
		}
	}
	return errors.Join(errs...)
}

// validateSecurityPolicy checks what the SecurityPolicy CRD's CEL rules and
// required markers enforce for the fields we use.
func validateSecurityPolicy(sp *egv1a1.SecurityPolicy) error {
	var errs []error
	s := sp.Spec
	// The CRD still accepts the deprecated singular fields, so its rules do too.
	if len(s.TargetRefs) == 0 && s.TargetRef == nil && len(s.TargetSelectors) == 0 { //nolint:staticcheck // SA1019: the CRD's own rule reads targetRef
		errs = append(errs, errors.New("spec: either targetRef or targetRefs must be used"))
	}
	for i, ref := range s.TargetRefs {
		if ref.Group != gwapiv1.GroupName || ref.Kind == "" || ref.Name == "" {
			errs = append(errs, fmt.Errorf("spec.targetRefs[%d]: group %s, kind and name are required", i, gwapiv1.GroupName))
		}
	}
	if ea := s.ExtAuth; ea != nil {
		if (ea.GRPC == nil) == (ea.HTTP == nil) {
			errs = append(errs, errors.New("spec.extAuth: exactly one of grpc or http must be set"))
		}
		if g := ea.GRPC; g != nil {
			if g.BackendRef == nil && len(g.BackendRefs) == 0 { //nolint:staticcheck // SA1019: the CRD's own rule reads backendRef
				errs = append(errs, errors.New("spec.extAuth.grpc: backendRef or backendRefs needs to be set"))
			}
			for i, br := range g.BackendRefs {
				if br.Name == "" || br.Port == nil {
					errs = append(errs, fmt.Errorf("spec.extAuth.grpc.backendRefs[%d]: name and port are required", i))
				}
			}
		}
	}
	if c := s.CORS; c != nil {
		for i, o := range c.AllowOrigins {
			if o == "" {
				errs = append(errs, fmt.Errorf("spec.cors.allowOrigins[%d] is empty", i))
			}
		}
	}
	return errors.Join(errs...)
}

func validateHTTPRoute(r *gwapiv1.HTTPRoute) error {
	var errs []error
	if len(r.Spec.ParentRefs) == 0 {
		errs = append(errs, errors.New("spec.parentRefs is required"))
	}
	for i, rule := range r.Spec.Rules {
		for j, br := range rule.BackendRefs {
			if br.Name == "" || br.Port == nil {
				errs = append(errs, fmt.Errorf("spec.rules[%d].backendRefs[%d]: name and port are required for a Service", i, j))
			}
		}
	}
	return errors.Join(errs...)
}

func validateReferenceGrant(g *gwapiv1b1.ReferenceGrant) error {
	var errs []error
	if len(g.Spec.From) == 0 || len(g.Spec.To) == 0 {
		errs = append(errs, errors.New("spec.from and spec.to are required"))
	}
	for i, f := range g.Spec.From {
		if f.Kind == "" || f.Namespace == "" {
			errs = append(errs, fmt.Errorf("spec.from[%d]: kind and namespace are required", i))
		}
	}
	for i, to := range g.Spec.To {
		if to.Kind == "" {
			errs = append(errs, fmt.Errorf("spec.to[%d].kind is required", i))
		}
	}
	return errors.Join(errs...)
}
