/* http_status.h -- reason phrases for the HTTP statuses wshub sends.
 *
 * Both the worker (refusals before the WebSocket upgrade) and wshub-admin (every admin answer)
 * write status lines by hand; one table keeps their wording the same.
 */
#ifndef WSHUB_HTTP_STATUS_H
#define WSHUB_HTTP_STATUS_H

/* The reason phrase for `status` ("Not Found"), or "Unknown" for a status wshub never sends. */
const char *http_status_phrase(int status);

#endif /* WSHUB_HTTP_STATUS_H */
