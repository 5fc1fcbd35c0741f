/* admin_page.c -- GET /admin/ (the stats page), /admin/page.js and /admin/page.css.
 *
 * The three files are embedded in the binary (admin_assets.h), so the page needs nothing from
 * the network and always matches the stats.json of the program serving it. The page is one
 * HTML response that loads its script and style from this same program; everything it shows
 * comes from stats.json (polled by page.js), so the three responses hold no data and are served
 * without the admin token: the token guards stats.json and the actions (admin_auth.c).
 *
 * Content-Security-Policy on the page: nothing by default; scripts and styles only from this
 * origin (page.js, page.css: no inline code, no 'unsafe-inline'), fetch() only to this origin,
 * images only data: URIs, no <base>, no form submissions (page.js sends them with fetch), no
 * framing. The one per-request value is the CSRF token in a <meta> tag, replacing the marker
 * {{CSRF_TOKEN}}; without a live hub it is empty and page.js picks the token up from the first
 * stats.json answer once the hub is back.
 */
#include "admin.h"

#include <string.h>

#include "admin_assets.h"

#define PAGE_TOKEN_MARKER "{{CSRF_TOKEN}}"

#define PAGE_CSP                                                                                   \
    "Content-Security-Policy: default-src 'none'; script-src 'self'; style-src 'self'; "           \
    "img-src data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "                     \
    "frame-ancestors 'none'\r\n"
#define PAGE_COMMON_HEADERS "X-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\n"

/* The CSRF token when a live hub's segment is attached, else "". Never answers 503 itself. */
static void page_token(struct admin_req *r, char *out, size_t outlen)
{
    enum admin_seg_status st;
    char why[128];
    out[0] = '\0';
    if (r->seg == NULL)
        r->seg = admin_segment_get(&r->ctx->segs, &st, why, sizeof(why));
    if (r->seg != NULL && admin_csrf_token(&r->seg->shm, out, outlen) < 0)
        out[0] = '\0';
}

void admin_handle_page(struct admin_req *r)
{
    const char *html = (const char *)admin_page_html;
    const char *mark =
        memmem(html, admin_page_html_len, PAGE_TOKEN_MARKER, sizeof(PAGE_TOKEN_MARKER) - 1);
    char token[ADMIN_CSRF_TOKEN_LEN + 1];
    struct admin_buf *b = &r->thr->out;
    if (mark == NULL) {
        admin_respond_error(r, 500, "stats page has no CSRF marker", NULL);
        return;
    }
    page_token(r, token, sizeof(token));
    admin_buf_append(b, html, (size_t)(mark - html));
    admin_buf_puts(b, token);
    size_t after = (size_t)(mark - html) + sizeof(PAGE_TOKEN_MARKER) - 1;
    admin_buf_append(b, html + after, admin_page_html_len - after);
    if (b->failed) {
        admin_respond_error(r, 500, "out of memory", NULL);
        return;
    }
    admin_respond(r, 200, "text/html; charset=utf-8",
                  PAGE_CSP PAGE_COMMON_HEADERS "X-Frame-Options: DENY\r\n", b->data, b->len);
}

void admin_handle_page_js(struct admin_req *r)
{
    admin_respond(r, 200, "text/javascript; charset=utf-8", PAGE_COMMON_HEADERS, admin_page_js,
                  admin_page_js_len);
}

void admin_handle_page_css(struct admin_req *r)
{
    admin_respond(r, 200, "text/css; charset=utf-8", PAGE_COMMON_HEADERS, admin_page_css,
                  admin_page_css_len);
}
