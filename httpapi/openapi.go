package httpapi

import (
	_ "embed"
	"net/http"

	"github.com/labstack/echo/v4"
)

// openAPIDocument describes the REST API in OpenAPI 3.1. The REST tests
// validate every request they make, and every answer they get, against
// it, so that it stays true.
//
//go:embed openapi.json
var openAPIDocument []byte

// openAPI answers GET /openapi.json, which needs no token.
func openAPI(c echo.Context) error {
	return c.Blob(http.StatusOK, echo.MIMEApplicationJSON, openAPIDocument)
}
