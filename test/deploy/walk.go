// Package deploy checks what tokengate ships for deployment — the Dockerfile,
// the Helm chart and the proxy configurations under examples/ — against the
// real schemas: Envoy's typed v3 API with its validation rules, client-go's
// scheme for Kubernetes objects, and the CRDs' required fields. It is its own
// Go module so that client-go and friends never enter the product's go.mod.
package deploy

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
)

// validator is what protoc-gen-validate generates on every Envoy message.
type validator interface{ ValidateAll() error }

// walkAnys visits every message under m. Each google.protobuf.Any is
// unpacked (its type must be linked into this test binary), validated with
// ValidateAll, appended to out, and walked in turn: ValidateAll never looks
// inside an Any, so without this a typo'd filter config would pass.
func walkAnys(m proto.Message, path string, out *[]proto.Message) error {
	var errs []error
	msg := m.ProtoReflect()
	msg.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Kind() != protoreflect.MessageKind && fd.Kind() != protoreflect.GroupKind {
			return true
		}
		name := path + "." + string(fd.Name())
		switch {
		case fd.IsList():
			list := v.List()
			for i := range list.Len() {
				errs = append(errs, visit(list.Get(i).Message().Interface(), fmt.Sprintf("%s[%d]", name, i), out))
			}
		case fd.IsMap():
			if fd.MapValue().Kind() != protoreflect.MessageKind {
				return true
			}
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				errs = append(errs, visit(mv.Message().Interface(), fmt.Sprintf("%s[%s]", name, k.String()), out))
				return true
			})
		default:
			errs = append(errs, visit(v.Message().Interface(), name, out))
		}
		return true
	})
	return errors.Join(errs...)
}

func visit(m proto.Message, path string, out *[]proto.Message) error {
	a, ok := m.(*anypb.Any)
	if !ok {
		return walkAnys(m, path, out)
	}
	inner, err := a.UnmarshalNew()
	if err != nil {
		return fmt.Errorf("%s: unpack %s: %w", path, a.GetTypeUrl(), err)
	}
	if v, ok := inner.(validator); ok {
		if err := v.ValidateAll(); err != nil {
			return fmt.Errorf("%s (%s): %w", path, a.GetTypeUrl(), err)
		}
	}
	*out = append(*out, inner)
	return walkAnys(inner, path+"<"+string(inner.ProtoReflect().Descriptor().FullName())+">", out)
}

// repoRoot is the product repository: two levels above this module.
func repoRoot(t testing.TB) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Clean(filepath.Join(wd, "..", ".."))
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repository root %s: %v", root, err)
	}
	return root
}
