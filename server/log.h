/* server/log.h -- one-line log records to stderr, filtered by --log-level.
 *
 *     log_set_level(LOG_LEVEL_INFO);
 *     log_msg(LOG_LEVEL_WARN, "store: %s", err.msg);
 *     // 2026-11-28T04:36:37.123Z warn store: storage full while ...
 *
 * Each record is written with one stdio call, so lines from different threads never interleave.
 * Never log tokens or request bodies.
 */
#ifndef ND_LOG_H
#define ND_LOG_H

enum log_level {
    LOG_LEVEL_ERROR = 0,
    LOG_LEVEL_WARN = 1,
    LOG_LEVEL_INFO = 2,
    LOG_LEVEL_DEBUG = 3,
};

/* "error" | "warn" | "info" | "debug" -> *level; -1 for anything else (level unchanged). */
int log_level_parse(const char *name, int *level);

/* Records above `level` are dropped. Default LOG_LEVEL_INFO. */
void log_set_level(int level);

/* Would a record at `level` be written? Lets callers skip formatting work. */
int log_enabled(int level);

/* Write "<RFC 3339 time> <level> <message>\n" to stderr when enabled. */
void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif /* ND_LOG_H */
