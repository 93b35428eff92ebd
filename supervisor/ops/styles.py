"""The dashboard's look: its stylesheet and the auto-refresh timer script.

Static text only. The script is the one the Content-Security-Policy allows (by
nonce): it reloads the page every ``refresh`` seconds unless the user is typing.
"""

from __future__ import annotations

__all__ = ["CSS", "REFRESH_JS"]

CSS = """
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d2330;
background:#f5f6f8}
header{background:#1d2330;color:#fff;padding:10px 20px;display:flex;gap:24px;align-items:center;
flex-wrap:wrap}
header a{color:#cfd6e6;text-decoration:none;margin-right:14px}
header a.on{color:#fff;font-weight:600;border-bottom:2px solid #e04b3c}
header .brand{font-weight:700;color:#fff;letter-spacing:.5px}
header .brand span{color:#e04b3c}
header .target{margin-left:auto;color:#9aa3b5;font-size:12px}
main{padding:16px 20px;max-width:1400px}
h1{font-size:20px;margin:4px 0 14px;word-break:break-all}
h2{font-size:16px;margin:22px 0 8px}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #dde1e8}
th,td{text-align:left;padding:6px 9px;border-bottom:1px solid #eceef2;vertical-align:top;
white-space:nowrap}
td.wrap,.facts td{white-space:normal;word-break:break-word}
th{background:#f0f2f5;font-weight:600;font-size:12px;text-transform:uppercase;color:#566}
td.num{text-align:right;font-variant-numeric:tabular-nums}
tr:hover td{background:#fafbfc}
code,pre,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
pre{background:#fff;border:1px solid #dde1e8;padding:10px;overflow:auto;max-height:420px;
white-space:pre-wrap;word-break:break-all}
pre.tb{background:#fff6f5;border-color:#f1c4bf}
a{color:#2456b3}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;
background:#e6e8ec;color:#333}
.s-succeeded{background:#dcf3e3;color:#17693a}.s-failed{background:#fbe0dd;color:#a3261a}
.s-running{background:#dde9fb;color:#1d4f9c}.s-queued{background:#eceff3;color:#444}
.s-scheduled{background:#ece4fa;color:#5b3a9c}.s-canceled{background:#fdecd6;color:#8a5208}
form.filters{display:flex;gap:10px;align-items:end;margin-bottom:12px;flex-wrap:wrap}
label{font-size:12px;color:#556;display:flex;flex-direction:column;gap:2px}
input,select,button{font:inherit;padding:4px 8px;border:1px solid #c5cad3;border-radius:4px;
background:#fff}
button{background:#2456b3;color:#fff;border-color:#2456b3;cursor:pointer}
button.danger{background:#c0392b;border-color:#c0392b}
form.out{display:inline}form.out button{padding:0 6px;font-size:12px}
.pager{margin:10px 0;display:flex;gap:14px;align-items:center}
.notice{background:#eaf4ff;border:1px solid #b8d6f6;padding:8px 12px;margin-bottom:12px}
.error{background:#fbe0dd;border:1px solid #f1b2aa;padding:8px 12px;margin-bottom:12px}
.muted{color:#7a8393}
.facts td:first-child{width:170px;color:#556;font-weight:600}
.bar{position:relative;height:12px;background:#eef0f4;min-width:160px;border-radius:3px}
.bar span{position:absolute;top:0;bottom:0;border-radius:3px;background:#3b78d8;min-width:2px}
.bar span.failed{background:#c0392b}
.actions{display:flex;gap:18px;flex-wrap:wrap;margin:8px 0 14px}
.actions form{background:#fff;border:1px solid #dde1e8;padding:10px;display:flex;gap:8px;
align-items:end}
.sup{background:#fff;border:1px solid #dde1e8;padding:10px 12px;margin-bottom:14px}
.sup h2{margin-top:0}
.sup .facts{display:flex;gap:18px;flex-wrap:wrap;margin-bottom:8px}
footer{padding:10px 20px;color:#7a8393;font-size:12px}
"""

# ``leaving``: set when the page starts to unload (a link clicked, a form sent);
# a reload then would cancel that navigation (a slow next page lost the click).
# Cleared 10 s later should the page still be here (a navigation that never
# happened), so the refresh resumes; a page restored from the back/forward cache
# starts refreshing again.
REFRESH_JS = (
    "(function(){var s=%d*1000,leaving=false;function busy(){var a=document.activeElement;"
    "if(a&&/^(INPUT|SELECT|TEXTAREA)$/.test(a.tagName))return true;"
    "var p=document.querySelectorAll('input[type=password],input[name=reason]');"
    "for(var i=0;i<p.length;i++){if(p[i].value)return true;}return false;}"
    "function tick(){if(leaving||busy()){setTimeout(tick,s);}else{location.reload();}}"
    "addEventListener('beforeunload',function(){leaving=true;"
    "setTimeout(function(){leaving=false;},10000);});"
    "addEventListener('pageshow',function(e){if(e.persisted){leaving=false;}});"
    "setTimeout(tick,s);})();"
)
