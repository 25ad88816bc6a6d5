package main

import "net/http"

// testClient is the HTTP client of this package's tests. Not
// http.DefaultClient: httptest.Server.Close (healthcheck and keygen tests)
// closes the default transport's idle connections, which breaks a parallel
// test's request that is just reusing one.
var testClient = &http.Client{Transport: &http.Transport{}}
