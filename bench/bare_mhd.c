/* bench/bare_mhd.c -- the reference point for neurond's HTTP overhead: a bare libmicrohttpd
 * server that answers every request with a fixed 200 JSON body (the same bytes and headers as
 * neurond's GET /healthz: Content-Type, Cache-Control, X-Request-Id), reading and discarding any
 * request body.
 *
 * It starts libmicrohttpd exactly as server/http.c does -- internal polling thread, epoll (then
 * poll), suspend/resume allowed, a thread pool of --threads workers (default: one per core),
 * the same connection limit and idle timeout defaults -- so the difference to neurond is
 * neurond's own work per request.
 *
 *   bare_mhd [--port P] [--threads N]     prints "bare_mhd listening on 127.0.0.1:<port>"
 *                                          and serves until SIGINT/SIGTERM.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <microhttpd.h>

static const char BODY[] = "{\"status\":\"ok\",\"version\":\"0.1.0\",\"db\":\"ok\"}";
static struct MHD_Response *g_resp;   /* shared, persistent: built once */
static volatile sig_atomic_t g_stop;

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_size, void **req_cls)
{
    static int first;
    (void)cls;
    (void)url;
    (void)method;
    (void)version;
    (void)upload_data;
    if (*req_cls == NULL) {   /* headers only: come back for the body */
        *req_cls = &first;
        return MHD_YES;
    }
    if (*upload_size != 0) {  /* discard the body */
        *upload_size = 0;
        return MHD_YES;
    }
    return MHD_queue_response(conn, MHD_HTTP_OK, g_resp);
}

int main(int argc, char **argv)
{
    unsigned port = 0;
    long threads = sysconf(_SC_NPROCESSORS_ONLN);
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--port") == 0)
            port = (unsigned)atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--threads") == 0)
            threads = atol(argv[i + 1]);
        else {
            fprintf(stderr, "usage: bare_mhd [--port P] [--threads N]\n");
            return 2;
        }
    }
    if (threads < 1)
        threads = 1;

    g_resp = MHD_create_response_from_buffer(sizeof BODY - 1, (void *)BODY,
                                             MHD_RESPMEM_PERSISTENT);
    MHD_add_response_header(g_resp, "Cache-Control", "no-store");
    MHD_add_response_header(g_resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                            "application/json; charset=utf-8");
    MHD_add_response_header(g_resp, "X-Request-Id", "0123456789abcdef");

    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);

    /* As server/http.c: same flags, pollers tried in the same order, same defaults. */
    unsigned int base = MHD_USE_INTERNAL_POLLING_THREAD | MHD_ALLOW_SUSPEND_RESUME |
                        MHD_USE_ERROR_LOG;
    unsigned int pollers[] = {MHD_USE_EPOLL, MHD_USE_POLL, 0};
    struct MHD_OptionItem opts[] = {
        {MHD_OPTION_SOCK_ADDR, 0, &sa},
        {MHD_OPTION_CONNECTION_LIMIT, 1024, NULL},
        {MHD_OPTION_CONNECTION_TIMEOUT, 30, NULL},
        {MHD_OPTION_LISTENING_ADDRESS_REUSE, 1, NULL},
        {threads > 1 ? MHD_OPTION_THREAD_POOL_SIZE : MHD_OPTION_END, (intptr_t)threads, NULL},
        {MHD_OPTION_END, 0, NULL},
    };
    struct MHD_Daemon *d = NULL;
    for (int i = 0; i < 3 && d == NULL; ++i)
        d = MHD_start_daemon(base | pollers[i], (uint16_t)port, NULL, NULL, on_request, NULL,
                             MHD_OPTION_ARRAY, opts, MHD_OPTION_END);
    if (d == NULL) {
        fprintf(stderr, "bare_mhd: cannot listen on 127.0.0.1:%u\n", port);
        return 1;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    printf("bare_mhd listening on 127.0.0.1:%u\n", info != NULL ? (unsigned)info->port : port);
    fflush(stdout);

    struct sigaction act;
    memset(&act, 0, sizeof act);
    act.sa_handler = on_signal;
    sigaction(SIGINT, &act, NULL);
    sigaction(SIGTERM, &act, NULL);
    while (!g_stop)
        pause();
    MHD_stop_daemon(d);
    MHD_destroy_response(g_resp);
    return 0;
}
