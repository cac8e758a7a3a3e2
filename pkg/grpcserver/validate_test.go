package grpcserver

import (
	"context"
	"maps"
	"testing"

	"buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/bulkhead/bulkhead/pkg/authz"
)

// The grpc_testing messages carry no validation rules, so this test builds a tiny service whose
// request has one — `string name = 1 [(buf.validate.field).string.min_len = 1]` — at run time,
// and serves it through the real chain with dynamic messages.

const mCreate = "/bulkhead.validtest.v1.Things/Create"

func thingDescriptor(t *testing.T) protoreflect.MessageDescriptor {
	t.Helper()
	opts := &descriptorpb.FieldOptions{}
	proto.SetExtension(opts, validate.E_Field, validate.FieldRules_builder{
		String: validate.StringRules_builder{MinLen: proto.Uint64(1)}.Build(),
	}.Build())
	fdp := &descriptorpb.FileDescriptorProto{
		Name:       proto.String("bulkhead/validtest/v1/things.proto"),
		Package:    proto.String("bulkhead.validtest.v1"),
		Syntax:     proto.String("proto3"),
		Dependency: []string{"buf/validate/validate.proto"},
		MessageType: []*descriptorpb.DescriptorProto{{
			Name: proto.String("Thing"),
			Field: []*descriptorpb.FieldDescriptorProto{{
				Name: proto.String("name"), Number: proto.Int32(1), JsonName: proto.String("name"),
				Type:    descriptorpb.FieldDescriptorProto_TYPE_STRING.Enum(),
				Label:   descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum(),
				Options: opts,
			}},
		}},
	}
	fd, err := protodesc.NewFile(fdp, protoregistry.GlobalFiles)
	if err != nil {
		t.Fatal(err)
	}
	return fd.Messages().ByName("Thing")
}

func serveThings(t *testing.T, e *env, md protoreflect.MessageDescriptor) {
	t.Helper()
	desc := grpc.ServiceDesc{
		ServiceName: "bulkhead.validtest.v1.Things",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{
			MethodName: "Create",
			Handler: func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
				in := dynamicpb.NewMessage(md)
				if err := dec(in); err != nil {
					return nil, err
				}
				echo := func(_ context.Context, req any) (any, error) { return req, nil }
				return interceptor(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: mCreate}, echo)
			},
		}},
	}
	e.srv.RegisterService(&desc, struct{}{})
}

func TestProtovalidateRunsAfterAuth(t *testing.T) {
	md := thingDescriptor(t)
	policy := maps.Clone(testPolicy)
	policy[mCreate] = authz.Rule{Permission: authz.RecordsRead}
	e := start(t, options{policy: policy, register: func(e *env) { serveThings(t, e, md) }})

	call := func(ctx context.Context, name string) error {
		req := dynamicpb.NewMessage(md)
		req.Set(md.Fields().ByName("name"), protoreflect.ValueOfString(name))
		return e.conn.Invoke(ctx, mCreate, req, dynamicpb.NewMessage(md))
	}
	ctx := withToken(context.Background(), e.token(t, nil))
	if err := call(ctx, "ok"); err != nil {
		t.Fatalf("valid request: %v", err)
	}
	err := call(ctx, "")
	st := status.Convert(err)
	if st.Code() != codes.InvalidArgument {
		t.Fatalf("empty name: %v, want InvalidArgument", err)
	}
	var violations *validate.Violations
	for _, d := range st.Details() {
		if v, ok := d.(*validate.Violations); ok {
			violations = v
		}
	}
	if violations == nil || len(violations.GetViolations()) != 1 {
		t.Fatalf("no field violation detail: %v", st.Details())
	}
	// An unauthenticated caller learns nothing about the request's shape.
	if err := call(context.Background(), ""); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("invalid request without token: %v, want Unauthenticated", err)
	}
}
