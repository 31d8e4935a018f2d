/* server/routes_admin.c -- operating the daemon over HTTP: online backups.
 *
 * GET /v1/backup answers a consistent snapshot of the whole database as one SQLite file
 * (application/vnd.sqlite3, as an attachment). Like every /v1 path it needs a bearer token when
 * tokens are configured. The snapshot is written by store_backup() into a private temporary
 * file next to the database (mode 0600, same file system, so no small /tmp fills up), which is
 * unlinked as soon as it is open for reading: nothing is left behind, even if the client leaves
 * or the daemon dies mid-transfer. The server never writes to a path a request names.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "app.h"
#include "http.h"
#include "routes.h"
#include "store.h"

typedef struct backup_reader {
    int fd;
} backup_reader_t;

static ssize_t backup_read(void *ctx, char *buf, size_t max)
{
    backup_reader_t *r = ctx;
    for (;;) {
        ssize_t n = read(r->fd, buf, max);
        if (n > 0)
            return n;
        if (n == 0)
            return HTTP_STREAM_END;
        if (errno != EINTR)
            return HTTP_STREAM_ERROR;
    }
}

static void backup_reader_free(void *ctx)
{
    backup_reader_t *r = ctx;
    if (r == NULL)
        return;
    close(r->fd);
    free(r);
}

/* GET /v1/backup -> 200 application/vnd.sqlite3, the database as of one committed state. */
static int admin_backup(http_req_t *req, err_t *err)
{
    app_t *app = app_of(req);
    if (strcmp(store_dialect(app->store), "sqlite") != 0)
        return err_set(err, ERR_NOTSUPPORTED, "GET /v1/backup copies a SQLite database; back "
                       "up PostgreSQL with pg_dump");
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.backup-XXXXXX", store_path(app->store)) >=
        sizeof tmp)
        return err_set(err, ERR_INTERNAL, "database path too long for a backup file name");
    int fd = mkstemp(tmp);
    if (fd < 0)
        return err_set(err, ERR_UNAVAILABLE,
                       "cannot create a temporary backup file beside the database: %s",
                       strerror(errno));
    close(fd);
    int rc = store_backup(app->store, tmp, err);
    if (rc < 0) {
        unlink(tmp);
        return rc;
    }
    fd = open(tmp, O_RDONLY | O_CLOEXEC);
    int saved = errno;
    unlink(tmp);       /* the open descriptor keeps the data; nothing to clean up later */
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        if (fd >= 0) {
            saved = errno;
            close(fd);
        }
        return err_set(err, ERR_UNAVAILABLE, "cannot read the backup file: %s",
                       strerror(saved));
    }
    backup_reader_t *r = malloc(sizeof *r);
    if (r == NULL) {
        close(fd);
        return err_set(err, ERR_NOMEM, "out of memory");
    }
    r->fd = fd;

    char now[STORE_TIME_MAX], name[96], size[32];
    store_now(now);
    /* "2026-11-28T04:36:37.123Z" -> neurond-20261128T043637Z.db */
    snprintf(name, sizeof name, "attachment; filename=\"neurond-%.4s%.2s%.2sT%.2s%.2s%.2sZ.db\"",
             now, now + 5, now + 8, now + 11, now + 14, now + 17);
    snprintf(size, sizeof size, "%" PRIdMAX, (intmax_t)st.st_size);
    if (http_set_header(req, "Content-Disposition", name) < 0 ||
        http_set_header(req, "X-Backup-Size", size) < 0) {
        backup_reader_free(r);
        return err_set(err, ERR_NOMEM, "out of memory");
    }
    rc = http_reply_stream(req, 200, "application/vnd.sqlite3", backup_read, r,
                           backup_reader_free, NULL);
    if (rc < 0) {
        backup_reader_free(r);
        return err_set(err, ERR_NOMEM, "out of memory");
    }
    return 0;
}

const http_route_t routes_admin[] = {
    {"GET", "/v1/backup", admin_backup, NULL, HTTP_ROUTE_NO_HEAD},
    HTTP_ROUTE_END,
};
