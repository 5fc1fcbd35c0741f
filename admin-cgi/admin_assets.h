/* admin_assets.h -- the stats page's files, embedded in wshub-admin at build time.
 *
 * The Makefile turns admin_page.html, admin_page.js and admin_page.css into byte arrays in
 * $(BUILD)/admin-cgi/admin_assets.c (od + sed, no extra tool), so the page works offline and
 * cannot drift from the binary that serves it. Edit the files, not the generated C.
 */
#ifndef WSHUB_ADMIN_ASSETS_H
#define WSHUB_ADMIN_ASSETS_H

#include <stddef.h>

extern const unsigned char admin_page_html[];
extern const size_t admin_page_html_len;
extern const unsigned char admin_page_js[];
extern const size_t admin_page_js_len;
extern const unsigned char admin_page_css[];
extern const size_t admin_page_css_len;

#endif /* WSHUB_ADMIN_ASSETS_H */
