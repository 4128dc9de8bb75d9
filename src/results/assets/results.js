// The results page, live: every tally the node publishes (about once a
// second, through /events) updates the bars, the numbers and the charts.
// Served as a file of the node's own (`script-src 'self'`), so the page's
// policy allows no inline script at all. The page works without it: the
// server renders the same words, numbers and charts.
(function(){
  if(!window.EventSource) return;
  var $=function(id){return document.getElementById(id);};
  var num=function(n){return n.toLocaleString('en-US');};
  var votes=function(n){return num(n)+(n===1?' vote':' votes');};
  var time=function(t){var d=new Date(t);return isNaN(d)?t:d.toLocaleTimeString();};
  var live=$('live'), asof=$('asof');
  asof.textContent=time(asof.getAttribute('datetime'));
  // Stale: the node publishes a tally every second; five without one
  // means the stream stalled (or the link to the node dropped).
  var STALE_MS=5000, stale=null;
  var setLive=function(ok){
    live.textContent=ok?'updates live':'updates paused: reconnecting\u2026';
    live.className=ok?'':'stale';
  };
  var arm=function(){clearTimeout(stale);stale=setTimeout(function(){setLive(false);},STALE_MS);};
  // The live region speaks politely, at most every 10 s, and only when a
  // count changed: not a word a second for a screen-reader user.
  var SPEAK_MS=10000, spoken='', lastSpoke=0, pending=null;
  var speak=function(text){
    if(text===spoken) return;
    clearTimeout(pending);
    var wait=Math.max(0,lastSpoke+SPEAK_MS-Date.now());
    pending=setTimeout(function(){spoken=text;lastSpoke=Date.now();$('announce').textContent=text;},wait);
  };
  // The charts: the last hour, a point a second, drawn as the server draws
  // them (chart_points in src/results/page.rs): x over the hour ending at
  // the newest point, y from 0 to the largest value shown.
  var HOUR=3600, W=600, H=100, series=[];
  var draw=function(id,key){
    var line=$(id+'-line'); if(!line) return;
    var pts=series.filter(function(p){return typeof p[key]==='number';});
    if(!pts.length){line.setAttribute('points','');$(id+'-max').textContent='0';return;}
    var end=pts[pts.length-1].t, max=0;
    pts.forEach(function(p){if(p[key]>max) max=p[key];});
    var out=pts.map(function(p){
      var x=(W*(p.t-end+HOUR)/HOUR), y=max>0?H-H*p[key]/max:H;
      return Math.round(x*10)/10+','+Math.round(y*10)/10;
    });
    line.setAttribute('points',out.join(' '));
    $(id+'-max').textContent=num(max);
  };
  var add=function(p){
    if(!p) return;
    var last=series[series.length-1];
    if(last&&last.t>=p.t) series[series.length-1]=p; else series.push(p);
    while(series.length&&series[0].t<=p.t-HOUR) series.shift();
  };
  var redraw=function(){draw('rate','counted');draw('queued','backlog');};
  var pending_points=[], loaded=false;
  var x=new XMLHttpRequest();
  x.open('GET','/api/results/series');
  x.onload=function(){
    try{JSON.parse(x.responseText).points.forEach(add);}catch(e){}
    loaded=true; pending_points.forEach(add); pending_points=[]; redraw();
  };
  x.onerror=function(){loaded=true;};
  x.send();
  // Built element by element: a node's name is text, never markup.
  var el=function(tag,cls,text){var e=document.createElement(tag);if(cls)e.className=cls;if(text!=null)e.textContent=text;return e;};
  var nodes=function(list){
    var box=$('nodes'); if(!box||!list) return;
    while(box.firstChild) box.removeChild(box.firstChild);
    if(!list.length){box.appendChild(el('li',null,'no votes counted yet'));return;}
    list.forEach(function(n){
      var li=el('li'), track=el('span','track small'), bar=el('span','bar');
      li.appendChild(el('span','node-name',n.node));
      li.appendChild(document.createTextNode(' '));
      li.appendChild(el('span','node-count',votes(n.count)+' \u00b7 '+n.percent.toFixed(1)+'%'));
      bar.style.width=n.percent+'%';
      track.appendChild(bar); li.appendChild(track); box.appendChild(li);
    });
  };
  var stateText=function(s){
    if(s.final) return 'final: all queued votes counted';
    if(s.window.phase==='closed') return 'voting closed; counting queued votes\u2026';
    if(s.window.phase==='not_open') return 'voting has not opened';
    if(s.window.closes) return 'voting open; final after the close';
    return 'counting queued votes\u2026';
  };
  var first=true;
  var es=new EventSource('/events');
  es.onerror=function(){setLive(false);};
  es.onmessage=function(ev){
    var s=JSON.parse(ev.data);
    setLive(true); arm();
    if(loaded){add(s.point);redraw();} else pending_points.push(s.point);
    asof.setAttribute('datetime',s.as_of); asof.textContent=time(s.as_of);
    $('backlog').textContent=s.unreachable_queues?(s.backlog?'at least '+num(s.backlog):'unknown'):num(s.backlog);
    var st=$('state');
    st.textContent=stateText(s);
    st.className='pill '+(s.final?'final':'counting');
    $('err').textContent=s.error||(s.unreachable_queues?unreachable(s.unreachable_queues):'');
    if(s.hidden) return;
    var note=$('hidden-note'); if(note) note.hidden=true;
    var said=[];
    s.options.forEach(function(o){
      var row=$('opt-'+o.option); if(!row) return;
      var pct=o.percent.toFixed(1)+'%';
      row.querySelector('.n').textContent=votes(o.count);
      row.querySelector('.p').textContent=pct;
      var track=row.querySelector('.track');
      track.setAttribute('aria-valuenow',o.percent.toFixed(1));
      track.setAttribute('aria-valuetext',pct);
      row.querySelector('.bar').style.width=o.percent+'%';
      said.push(o.label+' '+votes(o.count)+', '+pct);
    });
    $('total').textContent=num(s.total);
    nodes(s.nodes);
    var text=said.join('. ')+'. Total '+num(s.total)+'.';
    if(first){first=false;spoken=text;} else speak(text);
  };
  function unreachable(n){
    return n===1?'1 vote queue cannot be reached right now; its votes are counted when it is back.'
      :n+' vote queues cannot be reached right now; their votes are counted when they are back.';
  }
})();
