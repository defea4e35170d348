// A local OpenID Connect identity provider for the end-to-end sign-in test (test_oidc_browser.py).
//
//   node server.js PORT            (PORT 0 picks a free port)
//
// It is `oauth2-mock-server`: a real authorization-code flow (discovery document, /authorize, /token, JWKS,
// RS256-signed id_token, nonce echoed, PKCE verified), except that /authorize signs the browser in at once, without
// a login form. Who is signed in is chosen by the test, not typed into a form:
//   - the environment variables OIDC_MOCK_EMAIL and OIDC_MOCK_NAME give the starting person;
//   - GET /mock/sign-in-as?email=...&name=... changes the person for every later /authorize.
// Each authorization code remembers the person current when it was issued, so the id_token for that code
// carries `email`, `email_verified: true` and `name` of that person. No real-looking person is ever used.
//
// Once listening it prints one line, `OIDC-MOCK READY <issuer URL>`, to standard output.
import { createHash } from "node:crypto";
import { Events, OAuth2Server } from "oauth2-mock-server";

const port = Number.parseInt(process.argv[2] ?? "", 10);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error("usage: node server.js PORT");
  process.exit(2);
}

let person = {
  email: process.env.OIDC_MOCK_EMAIL ?? "oidc.director@clinic.test",
  name: process.env.OIDC_MOCK_NAME ?? "Test User",
};
const personByCode = new Map();

// A stable, meaningless subject identifier for an e-mail address.
const subjectOf = (email) => "mock-" + createHash("sha256").update(email).digest("hex").slice(0, 16);

const server = new OAuth2Server();
await server.issuer.keys.generate("RS256");

server.service.addRoute("GET", "/mock/sign-in-as", (req, res) => {
  const email = req.query.email;
  const name = req.query.name ?? "Test User";
  if (typeof email !== "string" || !email.includes("@") || typeof name !== "string") {
    res.writeHead(400, { "Content-Type": "text/plain" });
    res.end("email=ADDRESS is needed\n");
    return;
  }
  person = { email, name };
  res.writeHead(200, { "Content-Type": "text/plain" });
  res.end(`next sign-in: ${email}\n`);
});

server.service.on(Events.BeforeAuthorizeRedirect, (redirect) => {
  const code = redirect.url.searchParams.get("code");
  if (code) personByCode.set(code, person);
});

const claimsOf = (who) => ({
  sub: subjectOf(who.email),
  email: who.email,
  email_verified: true,
  name: who.name,
});

server.service.on(Events.BeforeTokenSigning, (token, req) => {
  const code = req.body?.code;
  const who = (typeof code === "string" && personByCode.get(code)) || person;
  Object.assign(token.payload, claimsOf(who));
});

server.service.on(Events.BeforeResponse, (_response, req) => {
  const code = req.body?.code;
  if (typeof code === "string") personByCode.delete(code);
});

server.service.on(Events.BeforeUserinfo, (userInfoResponse) => {
  userInfoResponse.body = claimsOf(person);
});

await server.start(port, "127.0.0.1");
// Name the address it listens on (the library would say "localhost", which may resolve to ::1 first).
server.issuer.url = `http://127.0.0.1:${server.address().port}`;
console.log(`OIDC-MOCK READY ${server.issuer.url}`);

const stop = async () => {
  await server.stop();
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
