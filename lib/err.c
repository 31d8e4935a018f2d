/* lib/err.c -- err_t helpers; the tables are expanded from ERR_MAP so they cannot drift. */
#include "err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int err_set(err_t *e, int code, const char *fmt, ...)
{
    if (e == NULL)
        return code;
    va_list ap;
    va_start(ap, fmt);
    e->code = code;
    e->field[0] = '\0';
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return code;
}

int err_set_field(err_t *e, int code, const char *field, const char *fmt, ...)
{
    if (e == NULL)
        return code;
    va_list ap;
    va_start(ap, fmt);
    e->code = code;
    snprintf(e->field, sizeof e->field, "%s", field != NULL ? field : "");
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return code;
}

void err_prefix_field(err_t *e, const char *prefix)
{
    if (e == NULL || prefix == NULL || prefix[0] == '\0')
        return;
    char joined[ERR_FIELD_MAX];
    snprintf(joined, sizeof joined, "%s%s", prefix, e->field);
    memcpy(e->field, joined, sizeof e->field);
}

const char *err_str(int code)
{
    switch (code) {
    case ERR_OK:
        return "ok";
#define X(name, val, msg) \
    case ERR_##name:      \
        return msg;
        ERR_MAP(X)
#undef X
    default:
        return "unknown error";
    }
}

const char *err_name(int code)
{
    switch (code) {
    case ERR_OK:
        return "OK";
#define X(name, val, msg) \
    case ERR_##name:      \
        return #name;
        ERR_MAP(X)
#undef X
    default:
        return "UNKNOWN";
    }
}
