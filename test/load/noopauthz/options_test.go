package main

import (
	"bytes"
	"go/ast"
	"go/parser"
	"go/printer"
	"go/token"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// The comparison is only fair while the no-op server is built with the same
// gRPC server options as `tokengate extauthz`: this fails when one side
// changes without the other.
func TestServerOptionsMatchTokengate(t *testing.T) {
	t.Parallel()
	ours := optionSources(t, filepath.Join("..", "..", "..", "cmd", "tokengate", "extauthz.go"), "newGRPCServer")
	mine := optionSources(t, "main.go", "serverOptions")
	if len(ours) == 0 {
		t.Fatal("found no options in newGRPCServer (cmd/tokengate/extauthz.go); has it moved?")
	}
	if diff := cmp.Diff(ours, mine); diff != "" {
		t.Errorf("noopauthz serverOptions differ from tokengate's newGRPCServer (-tokengate +noopauthz):\n%s", diff)
	}
}

// optionSources returns the source text of the grpc.ServerOption expressions
// in function fn of file: the arguments of its grpc.NewServer call, or the
// elements of the []grpc.ServerOption it returns.
func optionSources(t *testing.T, file, fn string) []string {
	t.Helper()
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, file, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var exprs []ast.Expr
	for _, decl := range f.Decls {
		fd, ok := decl.(*ast.FuncDecl)
		if !ok || fd.Name.Name != fn {
			continue
		}
		ast.Inspect(fd.Body, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.CallExpr:
				if sel, ok := n.Fun.(*ast.SelectorExpr); ok && sel.Sel.Name == "NewServer" {
					exprs = append(exprs, n.Args...)
					return false
				}
			case *ast.CompositeLit:
				if arr, ok := n.Type.(*ast.ArrayType); ok {
					if sel, ok := arr.Elt.(*ast.SelectorExpr); ok && sel.Sel.Name == "ServerOption" {
						exprs = append(exprs, n.Elts...)
						return false
					}
				}
			}
			return true
		})
	}
	out := make([]string, len(exprs))
	for i, e := range exprs {
		var b bytes.Buffer
		if err := printer.Fprint(&b, token.NewFileSet(), e); err != nil {
			t.Fatal(err)
		}
		out[i] = b.String()
	}
	return out
}
