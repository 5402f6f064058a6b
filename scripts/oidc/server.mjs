// The test OIDC provider of ailuro (scripts/oidc.sh, tests/interop): panva's oidc-provider, an
// OpenID Certified OP from npm, with the clients and users the tests and the docs use.
// Run:  node server.mjs   (env: OIDC_PORT=9400, OIDC_KEYS=./jwks.json,
//                         OIDC_WEB_REDIRECT_URIS=comma-separated callback URLs of the browser login)
// Binds 127.0.0.1 only. In-memory storage: opaque and refresh tokens die with the process; JWTs
// keep validating across restarts because the signing key in OIDC_KEYS is reused.
import { Provider } from 'oidc-provider';
import { generateKeyPair, exportJWK } from 'jose';
import fs from 'node:fs';

const PORT = Number(process.env.OIDC_PORT || 9400);
const ISSUER = `http://127.0.0.1:${PORT}`;
const KEYFILE = process.env.OIDC_KEYS || './jwks.json';
const API_RESOURCE = process.env.OIDC_API_RESOURCE || 'urn:wms:api';
const WEB_REDIRECT_URIS = (process.env.OIDC_WEB_REDIRECT_URIS
  || 'http://127.0.0.1:8000/oidc/callback/,http://localhost:8000/oidc/callback/').split(',').filter(Boolean);
const ROBOTS = ['wms-robot', 'other-robot'];

// Stable RS256 signing key, so restarts don't invalidate cached JWKS in tests.
async function loadKeys() {
  if (fs.existsSync(KEYFILE)) return JSON.parse(fs.readFileSync(KEYFILE, 'utf8'));
  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  const jwk = { ...(await exportJWK(privateKey)), kid: 'test-rs256-1', alg: 'RS256', use: 'sig' };
  const jwks = { keys: [jwk] };
  fs.writeFileSync(KEYFILE, JSON.stringify(jwks), { mode: 0o600 });
  return jwks;
}

// Test accounts: any login name is accepted by devInteractions; these get groups.
const ACCOUNTS = {
  alice: { groups: ['atlas', 'atlas/production'], email: 'alice@example.test' },
  bob: { groups: ['atlas'], email: 'bob@example.test' },
  pilot: { groups: ['atlas/pilot'], email: 'pilot@example.test' },
  carol: { groups: ['atlas', 'atlas/admin'], email: 'carol@example.test' },
  rita: { groups: ['atlas/monitor'], email: 'rita@example.test' },
};

const config = {
  jwks: await loadKeys(),
  cookies: { keys: ['test-only-cookie-key'] },
  clients: [
    { // browser login (mozilla-django-oidc OIDCAuthenticationBackend); code flow
      client_id: 'wms-web', client_secret: 'wms-web-secret',
      redirect_uris: WEB_REDIRECT_URIS,
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
    },
    { // CLI / user tokens via device flow (what PanDA/IAM uses for users)
      client_id: 'wms-cli', token_endpoint_auth_method: 'none',
      grant_types: ['urn:ietf:params:oauth:grant-type:device_code', 'refresh_token'],
      response_types: [], redirect_uris: [],
    },
    { // robot / service account: client_credentials -> JWT access token
      client_id: 'wms-robot', client_secret: 'wms-robot-secret',
      grant_types: ['client_credentials'], response_types: [], redirect_uris: [],
      scope: 'wms:read wms:write wms:pilot',
    },
    { // a second robot, so tests can tell two service identities apart (another pilot fleet)
      client_id: 'other-robot', client_secret: 'other-robot-secret',
      grant_types: ['client_credentials'], response_types: [], redirect_uris: [],
      scope: 'wms:read wms:write wms:pilot',
    },
  ],
  async findAccount(ctx, id) {
    const acct = ACCOUNTS[id] || { groups: [], email: `${id}@example.test` };
    return {
      accountId: id,
      async claims(use, scope) {
        return { sub: id, preferred_username: id, email: acct.email, email_verified: true, groups: acct.groups };
      },
    };
  },
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['preferred_username'], groups: ['groups'] },
  scopes: ['openid', 'offline_access', 'email', 'profile', 'groups', 'wms:read', 'wms:write', 'wms:pilot'],
  features: {
    devInteractions: { enabled: true },   // dev-only login page: any username, no password
    clientCredentials: { enabled: true },
    deviceFlow: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      // Tokens requested with resource=API_RESOURCE are RS256 JWTs with aud=API_RESOURCE.
      // Tokens requested without a resource stay opaque and are accepted by /me (userinfo).
      defaultResource: (ctx, client, oneOf) => (ROBOTS.includes(client.clientId) ? API_RESOURCE : oneOf),
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resourceIndicator, client) => {
        if (resourceIndicator !== API_RESOURCE) throw new Error('unknown resource');
        return {
          scope: 'wms:read wms:write wms:pilot',
          audience: API_RESOURCE,
          accessTokenTTL: 3600,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
  // Put user claims into JWT access tokens too (IAM/WLCG profile puts groups in AT). The name and
  // preferred_username are there for panda-client, which reads them from the token it is given
  // (prun takes the user's nickname from preferred_username and needs a name).
  async extraTokenClaims(ctx, token) {
    const id = token.accountId;
    if (id && ACCOUNTS[id]) return { groups: ACCOUNTS[id].groups, preferred_username: id, name: `${id} example` };
    return undefined;
  },
  pkce: { required: () => false },
  ttl: { AccessToken: 3600, IdToken: 3600, DeviceCode: 600, ClientCredentials: 3600, RefreshToken: 86400, Grant: 86400, Interaction: 600, Session: 86400 },
};

const provider = new Provider(ISSUER, config);
provider.on('server_error', (ctx, err) => console.error('server_error', err));
provider.listen(PORT, '127.0.0.1', () => console.log(`oidc-provider listening: ${ISSUER}/.well-known/openid-configuration`));
