/* server/log.c -- stderr logging with a level filter, and per-thread buffers for the access log.
 *
 * One write(2) per request record cost more than the rest of a small request's own work, so
 * log_buffered() appends to a buffer owned by the calling thread (its lock is almost never
 * contended) and the buffer is written out in one call when full, by a flusher thread every
 * LOG_FLUSH_MS, when its thread exits (a pthread key destructor), before every immediate record
 * and at exit(). Every write to fd 2 happens under write_mu and carries whole lines, so even a
 * pipe larger than PIPE_BUF never sees lines from two writers mixed.
 *
 * Lock order: list_mu, then a buffer's mu, then write_mu.
 */
#include "log.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX 2048
#define LOG_BUF_SIZE (32 * 1024)   /* a few hundred access records: one write each */

typedef struct log_buf {
    pthread_mutex_t mu;            /* owner appends, others flush */
    size_t len;
    struct log_buf *prev, *next;   /* log_bufs, under list_mu */
    char data[LOG_BUF_SIZE];
} log_buf_t;

static atomic_int log_level = LOG_LEVEL_INFO;
static const char *const log_names[] = {"error", "warn", "info", "debug"};

static pthread_mutex_t write_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t list_mu = PTHREAD_MUTEX_INITIALIZER;
static log_buf_t *log_bufs;
static pthread_once_t buf_once = PTHREAD_ONCE_INIT;
static pthread_key_t buf_key;
static int buf_key_ok;

static _Thread_local log_buf_t *tl_buf;
static _Thread_local time_t tl_sec = (time_t)-1;
static _Thread_local char tl_stamp[64];   /* "YYYY-MM-DDTHH:MM:SS." of tl_sec */

int log_level_parse(const char *name, int *level)
{
    for (int i = 0; i < (int)(sizeof log_names / sizeof log_names[0]); ++i) {
        if (name != NULL && strcmp(name, log_names[i]) == 0) {
            *level = i;
            return 0;
        }
    }
    return -1;
}

void log_set_level(int level)
{
    atomic_store(&log_level, level);
}

int log_enabled(int level)
{
    return level <= atomic_load(&log_level);
}

/* A failed or short write to stderr cannot be reported anywhere: drop the rest. */
static void write_all(const char *p, size_t n)
{
    pthread_mutex_lock(&write_mu);
    while (n > 0) {
        ssize_t w = write(STDERR_FILENO, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        p += w;
        n -= (size_t)w;
    }
    pthread_mutex_unlock(&write_mu);
}

/* "<time> <level> " into dst (at least 100 bytes); returns its length. gmtime_r takes a
 * process-wide lock in glibc, so it runs once a second per thread, not once per record. */
static size_t record_prefix(char *dst, int level)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (ts.tv_sec != tl_sec) {
        struct tm tm;
        gmtime_r(&ts.tv_sec, &tm);
        snprintf(tl_stamp, sizeof tl_stamp, "%04d-%02d-%02dT%02d:%02d:%02d.", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
        tl_sec = ts.tv_sec;
    }
    size_t n = strlen(tl_stamp);
    memcpy(dst, tl_stamp, n);
    long ms = ts.tv_nsec / 1000000L;
    dst[n++] = (char)('0' + ms / 100);
    dst[n++] = (char)('0' + ms / 10 % 10);
    dst[n++] = (char)('0' + ms % 10);
    dst[n++] = 'Z';
    dst[n++] = ' ';
    size_t k = strlen(log_names[level]);
    memcpy(dst + n, log_names[level], k);
    n += k;
    dst[n++] = ' ';
    return n;
}

/* Buffer mu held. */
static void buf_flush_locked(log_buf_t *b)
{
    if (b->len > 0)
        write_all(b->data, b->len);
    b->len = 0;
}

void log_flush(void)
{
    pthread_mutex_lock(&list_mu);
    for (log_buf_t *b = log_bufs; b != NULL; b = b->next) {
        pthread_mutex_lock(&b->mu);
        buf_flush_locked(b);
        pthread_mutex_unlock(&b->mu);
    }
    pthread_mutex_unlock(&list_mu);
}

/* The thread ends: its records go out and its buffer goes away. */
static void buf_release(void *arg)
{
    log_buf_t *b = arg;
    pthread_mutex_lock(&list_mu);
    if (b->prev != NULL)
        b->prev->next = b->next;
    else
        log_bufs = b->next;
    if (b->next != NULL)
        b->next->prev = b->prev;
    pthread_mutex_lock(&b->mu);
    buf_flush_locked(b);
    pthread_mutex_unlock(&b->mu);
    pthread_mutex_unlock(&list_mu);
    pthread_mutex_destroy(&b->mu);
    free(b);
    tl_buf = NULL;
}

static void *flusher_main(void *arg)
{
    (void)arg;
    struct timespec ts = {0, LOG_FLUSH_MS * 1000000L};
    for (;;) {
        nanosleep(&ts, NULL);
        log_flush();
    }
    return NULL;
}

static void buf_init_once(void)
{
    buf_key_ok = pthread_key_create(&buf_key, buf_release) == 0;
    atexit(log_flush);
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &attr, flusher_main, NULL) != 0)
        buf_key_ok = 0;                  /* no timer: records are written at once instead */
    pthread_attr_destroy(&attr);
}

/* This thread's buffer, created on first use; NULL when buffering is unavailable. */
static log_buf_t *buf_get(void)
{
    if (tl_buf != NULL)
        return tl_buf;
    pthread_once(&buf_once, buf_init_once);
    if (!buf_key_ok)
        return NULL;
    log_buf_t *b = malloc(sizeof *b);
    if (b == NULL)
        return NULL;
    pthread_mutex_init(&b->mu, NULL);
    b->len = 0;
    b->prev = NULL;
    if (pthread_setspecific(buf_key, b) != 0) {
        pthread_mutex_destroy(&b->mu);
        free(b);
        return NULL;
    }
    pthread_mutex_lock(&list_mu);
    b->next = log_bufs;
    if (log_bufs != NULL)
        log_bufs->prev = b;
    log_bufs = b;
    pthread_mutex_unlock(&list_mu);
    tl_buf = b;
    return b;
}

void log_buffered(int level, const char *msg, size_t len)
{
    if (!log_enabled(level) || level < 0 || level > LOG_LEVEL_DEBUG)
        return;
    char line[LOG_LINE_MAX + 128];   /* prefix, message, newline */
    size_t n = record_prefix(line, level);
    if (len > LOG_LINE_MAX)
        len = LOG_LINE_MAX;
    memcpy(line + n, msg, len);
    n += len;
    line[n++] = '\n';
    log_buf_t *b = buf_get();
    if (b == NULL) {
        write_all(line, n);
        return;
    }
    pthread_mutex_lock(&b->mu);
    if (b->len + n > sizeof b->data)
        buf_flush_locked(b);
    memcpy(b->data + b->len, line, n);
    b->len += n;
    pthread_mutex_unlock(&b->mu);
}

void log_msg(int level, const char *fmt, ...)
{
    if (!log_enabled(level) || level < 0 || level > LOG_LEVEL_DEBUG)
        return;
    char line[LOG_LINE_MAX + 128];   /* prefix, message, newline */
    size_t n = record_prefix(line, level);
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(line + n, LOG_LINE_MAX, fmt, ap);
    va_end(ap);
    n += k < 0 ? 0 : (size_t)k < LOG_LINE_MAX ? (size_t)k : LOG_LINE_MAX - 1;
    line[n++] = '\n';
    log_flush();
    write_all(line, n);
}
