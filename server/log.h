/* server/log.h -- one-line log records to stderr, filtered by --log-level.
 *
 *     log_set_level(LOG_LEVEL_INFO);
 *     log_msg(LOG_LEVEL_WARN, "store: %s", err.msg);
 *     // 2026-11-28T04:36:37.123Z warn store: storage full while ...
 *
 *     log_buffered(LOG_LEVEL_INFO, "http method=GET ...", len);   // the access log
 *
 * Records are written to file descriptor 2 with write(2), whole lines only and under one lock,
 * so lines from different threads never interleave. log_msg() writes at once. log_buffered()
 * is for the record of every request: it goes to a buffer of the calling thread that is written
 * out when it is full, at most LOG_FLUSH_MS later, when the thread ends, before any log_msg()
 * record (so the file keeps the order in which records were made), at log_flush() and at
 * exit(). Only a process killed outright (SIGKILL, a crash) can lose the last LOG_FLUSH_MS of
 * buffered records. Never log tokens or request bodies.
 */
#ifndef ND_LOG_H
#define ND_LOG_H

#include <stddef.h>

enum log_level {
    LOG_LEVEL_ERROR = 0,
    LOG_LEVEL_WARN = 1,
    LOG_LEVEL_INFO = 2,
    LOG_LEVEL_DEBUG = 3,
};

#define LOG_FLUSH_MS 100           /* longest time a buffered record waits to be written */

/* "error" | "warn" | "info" | "debug" -> *level; -1 for anything else (level unchanged). */
int log_level_parse(const char *name, int *level);

/* Records above `level` are dropped. Default LOG_LEVEL_INFO. */
void log_set_level(int level);

/* Would a record at `level` be written? Lets callers skip formatting work. */
int log_enabled(int level);

/* Write "<RFC 3339 time> <level> <message>\n" to stderr when enabled, after every buffered
 * record. */
void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Like log_msg() for the message msg[0..len) (no newline; cut at 2000 bytes), but buffered as
 * described above. The time is taken now. */
void log_buffered(int level, const char *msg, size_t len);

/* Write out every thread's buffered records now (shutdown calls it). */
void log_flush(void);

#endif /* ND_LOG_H */
