"""The pure sync core of member calendar views (no I/O).

- `render`       one occurrence as one member sees it (VCALENDAR with one VEVENT)
- `fingerprint`  normalised hashes of the carecal-owned content of a copy
- `gestures`     a member's copy read into a gesture; the merge that keeps their VALARMs
- `planner`      desired view + ETag listing + sync records -> actions as plain data
"""
