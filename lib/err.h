/* lib/err.h -- the one error type used everywhere in neurond.
 *
 * A function that can fail returns an int status (0 = ok, negative = one of enum err_code) and
 * fills an err_t with a human message and, for input errors, the path of the offending field:
 *
 *     err_t err = {0};
 *     if (codec_spec_decode(json, &spec, &err) < 0)
 *         printf("%s: %s (field %s)\n", err_name(err.code), err.msg, err.field);
 */
#ifndef ND_ERR_H
#define ND_ERR_H

/* name, value, default message. Append only: codes are mapped to HTTP statuses in server/. */
#define ERR_MAP(X)                                                  \
    X(INVAL, -1, "invalid argument")                                \
    X(NOMEM, -2, "out of memory")                                   \
    X(SHAPE, -3, "shape mismatch")                                  \
    X(NOTFOUND, -4, "not found")                                    \
    X(DB, -5, "storage error")                                      \
    X(JSON, -6, "invalid JSON")                                     \
    X(CONFLICT, -7, "conflict")                                     \
    X(RANGE, -8, "value out of range")                              \
    X(CANCELLED, -9, "cancelled")                                   \
    X(UNAVAILABLE, -10, "unavailable")                              \
    X(TOOBIG, -11, "payload too large")                             \
    X(BUSY, -12, "too many requests")                               \
    X(INTERNAL, -13, "internal error")                              \
    X(MEDIA, -14, "unsupported media type")                         \
    X(NOTSUPPORTED, -15, "not supported by this storage backend")

#define X(name, val, msg) ERR_##name = val,
enum err_code { ERR_OK = 0, ERR_MAP(X) };
#undef X

#define ERR_FIELD_MAX 128
#define ERR_MSG_MAX 256

typedef struct err {
    int code;                   /* enum err_code; 0 when nothing failed */
    char field[ERR_FIELD_MAX];  /* path of the offending input, "" when not about one field */
    char msg[ERR_MSG_MAX];      /* human message, names the field and the rule broken */
} err_t;

/* Record `code` and a printf-style message in `e` (which may be NULL). Returns `code`, so a
 * failure takes one line: `return err_set(err, ERR_INVAL, "steps=%d < 0", n);`. Clears field. */
int err_set(err_t *e, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Like err_set, and also records the field path (e.g. "hidden[1].units", "x[3][2]", "line 17"). */
int err_set_field(err_t *e, int code, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Prefix the recorded field path with `prefix`: "[2]" + "units" -> handled by the caller passing
 * "hidden[2]." The result is "<prefix><old field>". Used when an inner decoder reports a path
 * relative to its own object. No-op when e is NULL. */
void err_prefix_field(err_t *e, const char *prefix);

/* Static default message for a code ("invalid argument"); "unknown error" for anything else. */
const char *err_str(int code);

/* Stable name of a code ("INVAL" for ERR_INVAL); used in logs and tests. */
const char *err_name(int code);

#endif /* ND_ERR_H */
