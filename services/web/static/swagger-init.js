// Starts Swagger UI on /docs from the service's own files (no inline script: see security.py).
window.addEventListener("DOMContentLoaded", function () {
  window.ui = SwaggerUIBundle({ url: "/openapi.json", dom_id: "#swagger-ui" });
});
