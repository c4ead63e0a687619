// In a file, not inline, so the page's Content-Security-Policy can say script-src 'self'.
window.ui = SwaggerUIBundle({ url: "/openapi.json", dom_id: "#swagger-ui" });
