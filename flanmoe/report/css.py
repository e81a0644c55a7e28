"""The report page's stylesheet (inline in its ``<style>``: the page fetches nothing)."""

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2rem auto;max-width:86rem;
color:#1b1f24;line-height:1.45;padding:0 1rem}
h1{font-size:1.6rem}h2{font-size:1.25rem;margin-top:2rem;border-bottom:1px solid #d0d7de}
table{border-collapse:collapse;margin:.75rem 0;font-size:.9rem}
th,td{border:1px solid #d0d7de;padding:.3rem .55rem;text-align:left;vertical-align:top}
th{background:#f6f8fa}td.num{font-variant-numeric:tabular-nums;white-space:nowrap}
tr.gain td{background:#fbfbf0;font-weight:600}
.side{color:#57606a;font-size:.8rem;display:block}
.v{font-weight:700;padding:0 .35rem;border-radius:.25rem}
.holds{background:#dafbe1;color:#116329}.doesnot{background:#ffebe9;color:#a40e26}
.noise{background:#fff8c5;color:#6a5300}.unmeasured{background:#eaeef2;color:#424a53}
li{margin:.25rem 0}.rule{color:#57606a;font-size:.85rem}
figure{margin:1rem 0}figure img{max-width:100%;height:auto;border:1px solid #d0d7de}
figcaption{color:#57606a;font-size:.85rem}
"""
