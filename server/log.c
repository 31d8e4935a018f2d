/* server/log.c -- stderr logging with a level filter. */
#include "log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static atomic_int log_level = LOG_LEVEL_INFO;
static const char *const log_names[] = {"error", "warn", "info", "debug"};

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

void log_msg(int level, const char *fmt, ...)
{
    if (!log_enabled(level) || level < 0 || level > LOG_LEVEL_DEBUG)
        return;
    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000L, log_names[level]);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s\n", line);
}
