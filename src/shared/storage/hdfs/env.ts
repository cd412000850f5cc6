/** The environment variables the hdfs backend takes its identity from (index.ts, hdfsUser): simple authentication sends a user name, no secret. */
export const credentialEnv = ['HADOOP_USER_NAME'] as const;

export const secretEnv = [] as const;
