package kubernetes_test

import (
	"fmt"
	"strconv"

	"go.yaml.in/yaml/v3"
)

// The subset of the Kubernetes API these manifests use, spelt as in
// k8s.io/api. Documents are decoded with unknown fields rejected, so a
// misspelt or misplaced field fails the test instead of being dropped by
// the API server (or worse, by kubectl's client-side apply). A field that is
// valid Kubernetes but not modelled here fails too: add it, with its k8s.io/api
// JSON name.

type objectMeta struct {
	Name        string            `yaml:"name"`
	Namespace   string            `yaml:"namespace"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

type typeMeta struct {
	APIVersion string     `yaml:"apiVersion"`
	Kind       string     `yaml:"kind"`
	Metadata   objectMeta `yaml:"metadata"`
}

type namespace struct {
	typeMeta `yaml:",inline"`
}

type serviceAccount struct {
	typeMeta                     `yaml:",inline"`
	AutomountServiceAccountToken *bool `yaml:"automountServiceAccountToken"`
}

type configMap struct {
	typeMeta `yaml:",inline"`
	Data     map[string]string `yaml:"data"`
}

type service struct {
	typeMeta `yaml:",inline"`
	Spec     struct {
		Type      string            `yaml:"type"`
		ClusterIP string            `yaml:"clusterIP"`
		Selector  map[string]string `yaml:"selector"`
		Ports     []struct {
			Name       string      `yaml:"name"`
			Port       int32       `yaml:"port"`
			TargetPort intOrString `yaml:"targetPort"`
			Protocol   string      `yaml:"protocol"`
		} `yaml:"ports"`
	} `yaml:"spec"`
}

type labelSelector struct {
	MatchLabels map[string]string `yaml:"matchLabels"`
}

type podTemplate struct {
	Metadata objectMeta `yaml:"metadata"`
	Spec     podSpec    `yaml:"spec"`
}

type deployment struct {
	typeMeta `yaml:",inline"`
	Spec     struct {
		Replicas *int32        `yaml:"replicas"`
		Selector labelSelector `yaml:"selector"`
		Template podTemplate   `yaml:"template"`
	} `yaml:"spec"`
}

type statefulSet struct {
	typeMeta `yaml:",inline"`
	Spec     struct {
		ServiceName          string        `yaml:"serviceName"`
		Replicas             *int32        `yaml:"replicas"`
		Selector             labelSelector `yaml:"selector"`
		Template             podTemplate   `yaml:"template"`
		VolumeClaimTemplates []struct {
			Metadata objectMeta `yaml:"metadata"`
			Spec     struct {
				AccessModes      []string             `yaml:"accessModes"`
				StorageClassName *string              `yaml:"storageClassName"`
				Resources        resourceRequirements `yaml:"resources"`
			} `yaml:"spec"`
		} `yaml:"volumeClaimTemplates"`
	} `yaml:"spec"`
}

// clusterSPIFFEID is spire-controller-manager's spire.spiffe.io/v1alpha1 CRD.
type clusterSPIFFEID struct {
	typeMeta `yaml:",inline"`
	Spec     struct {
		SPIFFEIDTemplate  string         `yaml:"spiffeIDTemplate"`
		NamespaceSelector *labelSelector `yaml:"namespaceSelector"`
		PodSelector       *labelSelector `yaml:"podSelector"`
		DNSNameTemplates  []string       `yaml:"dnsNameTemplates"`
		ClassName         string         `yaml:"className"`
		TTL               string         `yaml:"ttl"`
		FederatesWith     []string       `yaml:"federatesWith"`
	} `yaml:"spec"`
}

type podSpec struct {
	ServiceAccountName            string              `yaml:"serviceAccountName"`
	AutomountServiceAccountToken  *bool               `yaml:"automountServiceAccountToken"`
	ShareProcessNamespace         *bool               `yaml:"shareProcessNamespace"`
	TerminationGracePeriodSeconds *int64              `yaml:"terminationGracePeriodSeconds"`
	SecurityContext               *podSecurityContext `yaml:"securityContext"`
	InitContainers                []container         `yaml:"initContainers"`
	Containers                    []container         `yaml:"containers"`
	Volumes                       []volume            `yaml:"volumes"`
}

type seccompProfile struct {
	Type string `yaml:"type"`
}

type podSecurityContext struct {
	RunAsUser      *int64          `yaml:"runAsUser"`
	RunAsGroup     *int64          `yaml:"runAsGroup"`
	RunAsNonRoot   *bool           `yaml:"runAsNonRoot"`
	FSGroup        *int64          `yaml:"fsGroup"`
	SeccompProfile *seccompProfile `yaml:"seccompProfile"`
}

type securityContext struct {
	RunAsUser                *int64 `yaml:"runAsUser"`
	RunAsGroup               *int64 `yaml:"runAsGroup"`
	RunAsNonRoot             *bool  `yaml:"runAsNonRoot"`
	ReadOnlyRootFilesystem   *bool  `yaml:"readOnlyRootFilesystem"`
	AllowPrivilegeEscalation *bool  `yaml:"allowPrivilegeEscalation"`
	Capabilities             *struct {
		Add  []string `yaml:"add"`
		Drop []string `yaml:"drop"`
	} `yaml:"capabilities"`
	SeccompProfile *seccompProfile `yaml:"seccompProfile"`
}

type container struct {
	Name            string   `yaml:"name"`
	Image           string   `yaml:"image"`
	ImagePullPolicy string   `yaml:"imagePullPolicy"`
	Command         []string `yaml:"command"`
	Args            []string `yaml:"args"`
	Env             []struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom *struct {
			SecretKeyRef *struct {
				Name string `yaml:"name"`
				Key  string `yaml:"key"`
			} `yaml:"secretKeyRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int32  `yaml:"containerPort"`
		Protocol      string `yaml:"protocol"`
	} `yaml:"ports"`
	RestartPolicy   string               `yaml:"restartPolicy"`
	StartupProbe    *probe               `yaml:"startupProbe"`
	ReadinessProbe  *probe               `yaml:"readinessProbe"`
	LivenessProbe   *probe               `yaml:"livenessProbe"`
	SecurityContext *securityContext     `yaml:"securityContext"`
	Resources       resourceRequirements `yaml:"resources"`
	VolumeMounts    []volumeMount        `yaml:"volumeMounts"`
}

type resourceRequirements struct {
	Requests map[string]string `yaml:"requests"`
	Limits   map[string]string `yaml:"limits"`
}

type probe struct {
	HTTPGet *struct {
		Path   string      `yaml:"path"`
		Port   intOrString `yaml:"port"`
		Scheme string      `yaml:"scheme"`
	} `yaml:"httpGet"`
	TCPSocket *struct {
		Port intOrString `yaml:"port"`
	} `yaml:"tcpSocket"`
	Exec *struct {
		Command []string `yaml:"command"`
	} `yaml:"exec"`
	InitialDelaySeconds int32 `yaml:"initialDelaySeconds"`
	PeriodSeconds       int32 `yaml:"periodSeconds"`
	TimeoutSeconds      int32 `yaml:"timeoutSeconds"`
	FailureThreshold    int32 `yaml:"failureThreshold"`
	SuccessThreshold    int32 `yaml:"successThreshold"`
}

type volumeMount struct {
	Name      string `yaml:"name"`
	MountPath string `yaml:"mountPath"`
	SubPath   string `yaml:"subPath"`
	ReadOnly  bool   `yaml:"readOnly"`
}

type keyToPath struct {
	Key  string `yaml:"key"`
	Path string `yaml:"path"`
}

type volume struct {
	Name     string `yaml:"name"`
	EmptyDir *struct {
		Medium    string `yaml:"medium"`
		SizeLimit string `yaml:"sizeLimit"`
	} `yaml:"emptyDir"`
	ConfigMap *struct {
		Name        string      `yaml:"name"`
		Items       []keyToPath `yaml:"items"`
		DefaultMode *int32      `yaml:"defaultMode"`
	} `yaml:"configMap"`
	Secret *struct {
		SecretName string      `yaml:"secretName"`
		Items      []keyToPath `yaml:"items"`
	} `yaml:"secret"`
	CSI *struct {
		Driver           string            `yaml:"driver"`
		ReadOnly         bool              `yaml:"readOnly"`
		VolumeAttributes map[string]string `yaml:"volumeAttributes"`
	} `yaml:"csi"`
	PersistentVolumeClaim *struct {
		ClaimName string `yaml:"claimName"`
	} `yaml:"persistentVolumeClaim"`
}

// intOrString is Kubernetes' IntOrString: a port number or a port name.
type intOrString struct {
	Int    int32
	String string
}

func (v *intOrString) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want a number or a name", n.Line)
	}
	if n.Tag == "!!int" {
		i, err := strconv.ParseInt(n.Value, 10, 32)
		if err != nil {
			return fmt.Errorf("line %d: %w", n.Line, err)
		}
		v.Int = int32(i)
		return nil
	}
	v.String = n.Value
	return nil
}
